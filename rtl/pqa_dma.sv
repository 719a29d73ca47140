// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// AXI4 master DMA, one command at a time (read or write of `beats` bus words from `addr`).
// Transfers are split into INCR bursts of at most 256 beats that never cross a 4 KiB boundary.
// Reads: one burst outstanding; every beat is handed out with its index (rd_valid_o, single cycle,
// rready is held high while a burst is open). Writes: AW and W are driven concurrently (no wait for
// AWREADY before WVALID); each W beat is fetched from the source with src_req_o / src_idx_o and taken
// from src_data_i one cycle later (registered-read RAM); the last beat of the command uses
// last_strb. A non-OKAY response marks the command failed; the burst in flight is completed and no
// further burst is issued, so the command always ends with nothing outstanding.
// Bus words are AxiDataWidth bits (pqa_top accepts 64 only); AXI4 protocol fields have their standard
// widths.

`default_nettype none

module pqa_dma #(
  parameter int AxiAddrWidth = 32,
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  // Derived, do not override.
  parameter int BeatsW       = pqa_pkg::LoadNbytesW - $clog2(AxiDataWidth / 8) + 1  // bus words of a command
) (
  input  logic                      clk_i,
  input  logic                      rst_ni,
  // command
  input  logic                      cmd_valid_i,
  input  logic                      cmd_write_i,
  input  logic [AxiAddrWidth-1:0]   cmd_addr_i,
  input  logic [BeatsW-1:0]         cmd_beats_i,
  input  logic [AxiDataWidth/8-1:0] cmd_last_strb_i,
  output logic                      done_o,
  output logic                      err_o,
  // read beats
  output logic                      rd_valid_o,
  output logic [BeatsW-1:0]         rd_idx_o,
  output logic [AxiDataWidth-1:0]   rd_data_o,
  // write data source
  output logic                      src_req_o,
  output logic [BeatsW-1:0]         src_idx_o,
  input  logic [AxiDataWidth-1:0]   src_data_i,
  // AXI4 master
  output logic [0:0]                m_axi_awid,
  output logic [AxiAddrWidth-1:0]   m_axi_awaddr,
  output logic [7:0]                m_axi_awlen,
  output logic [2:0]                m_axi_awsize,
  output logic [1:0]                m_axi_awburst,
  output logic                      m_axi_awlock,
  output logic [3:0]                m_axi_awcache,
  output logic [2:0]                m_axi_awprot,
  output logic                      m_axi_awvalid,
  input  logic                      m_axi_awready,
  output logic [AxiDataWidth-1:0]   m_axi_wdata,
  output logic [AxiDataWidth/8-1:0] m_axi_wstrb,
  output logic                      m_axi_wlast,
  output logic                      m_axi_wvalid,
  input  logic                      m_axi_wready,
  input  logic [0:0]                m_axi_bid,
  input  logic [1:0]                m_axi_bresp,
  input  logic                      m_axi_bvalid,
  output logic                      m_axi_bready,
  output logic [0:0]                m_axi_arid,
  output logic [AxiAddrWidth-1:0]   m_axi_araddr,
  output logic [7:0]                m_axi_arlen,
  output logic [2:0]                m_axi_arsize,
  output logic [1:0]                m_axi_arburst,
  output logic                      m_axi_arlock,
  output logic [3:0]                m_axi_arcache,
  output logic [2:0]                m_axi_arprot,
  output logic                      m_axi_arvalid,
  input  logic                      m_axi_arready,
  input  logic [0:0]                m_axi_rid,
  input  logic [AxiDataWidth-1:0]   m_axi_rdata,
  input  logic [1:0]                m_axi_rresp,
  input  logic                      m_axi_rlast,
  input  logic                      m_axi_rvalid,
  output logic                      m_axi_rready
);

  typedef enum logic [2:0] {
    DmaIdle,
    DmaRdStart,
    DmaRdData,
    DmaWrStart,
    DmaWrData,
    DmaWrResp,
    DmaDone
  } dma_state_e;

  typedef enum logic [1:0] {
    WReq,
    WLoad,
    WSend
  } w_state_e;

  dma_state_e state_q;
  w_state_e   wst_q;

  // AXI4: a burst moves at most 256 beats (8-bit len) and never crosses a 4 KiB page.
  localparam int MaxBurst  = 256;
  localparam int PageAw    = 12;                      // byte address bits of a 4 KiB page
  localparam int BusBytes  = AxiDataWidth / 8;
  localparam int BusAlign  = $clog2(BusBytes);        // byte-offset bits within a bus word
  localparam int PageBeats = (1 << PageAw) / BusBytes;
  localparam int PageBw    = PageAw - BusAlign + 1;   // bits of a beat count within a page (to4k)

  logic [AxiAddrWidth-1:0]   addr_q;
  logic [BeatsW-1:0]         rem_q, beat_q;
  logic [BusBytes-1:0]       last_strb_q;
  logic [7:0]                wcnt_q;
  logic                      err_q;
  logic                      arvalid_q, awvalid_q, wvalid_q, wlast_q;
  logic [7:0]                len_q;
  logic [AxiDataWidth-1:0]   wdata_q;
  logic [AxiDataWidth/8-1:0] wstrb_q;

  // Beats of the next burst: min(rem, 256, beats to the next 4 KiB boundary).
  logic [PageBw-1:0] to4k;
  logic [BeatsW-1:0] blen;
  always_comb begin
    to4k = PageBw'(PageBeats) - PageBw'(addr_q[PageAw-1:BusAlign]);
    blen = rem_q;
    if (blen > BeatsW'(MaxBurst)) begin
      blen = BeatsW'(MaxBurst);
    end
    if (blen > BeatsW'(to4k)) begin
      blen = BeatsW'(to4k);
    end
  end
  // the next burst's address: past len + 1 beats
  logic [AxiAddrWidth-1:0] next_addr;
  assign next_addr = addr_q + (AxiAddrWidth'(len_q) << BusAlign) + AxiAddrWidth'(BusBytes);

  logic rresp_err, bresp_err;
  assign rresp_err = (m_axi_rresp != 2'b00);
  assign bresp_err = (m_axi_bresp != 2'b00);

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q     <= DmaIdle;
      wst_q       <= WReq;
      addr_q      <= '0;
      rem_q       <= '0;
      beat_q      <= '0;
      last_strb_q <= '0;
      wcnt_q      <= '0;
      err_q       <= 1'b0;
      arvalid_q   <= 1'b0;
      awvalid_q   <= 1'b0;
      wvalid_q    <= 1'b0;
      wlast_q     <= 1'b0;
      len_q       <= '0;
      wdata_q     <= '0;
      wstrb_q     <= '0;
    end else begin
      unique case (state_q)
        DmaIdle: begin
          if (cmd_valid_i) begin
            addr_q      <= cmd_addr_i;
            rem_q       <= cmd_beats_i;
            beat_q      <= '0;
            last_strb_q <= cmd_last_strb_i;
            err_q       <= 1'b0;
            state_q     <= cmd_write_i ? DmaWrStart : DmaRdStart;
          end
        end
        DmaRdStart: begin
          len_q     <= 8'(blen - BeatsW'(1));
          arvalid_q <= 1'b1;
          rem_q     <= rem_q - blen;
          state_q   <= DmaRdData;
        end
        DmaRdData: begin
          if (m_axi_arready) begin
            arvalid_q <= 1'b0;
          end
          if (m_axi_rvalid) begin
            beat_q <= beat_q + BeatsW'(1);
            if (rresp_err) begin
              err_q <= 1'b1;
            end
            if (m_axi_rlast) begin
              addr_q  <= next_addr;
              state_q <= (err_q || rresp_err || rem_q == '0) ? DmaDone : DmaRdStart;
            end
          end
        end
        DmaWrStart: begin
          len_q     <= 8'(blen - BeatsW'(1));
          wcnt_q    <= 8'(blen - BeatsW'(1));
          awvalid_q <= 1'b1;
          rem_q     <= rem_q - blen;
          wst_q     <= WReq;
          state_q   <= DmaWrData;
        end
        DmaWrData: begin
          if (m_axi_awready) begin
            awvalid_q <= 1'b0;
          end
          unique case (wst_q)
            WReq: wst_q <= WLoad;
            WLoad: begin
              wdata_q  <= src_data_i;
              wstrb_q  <= (wcnt_q == '0 && rem_q == '0) ? last_strb_q : '1;
              wlast_q  <= (wcnt_q == '0);
              wvalid_q <= 1'b1;
              wst_q    <= WSend;
            end
            WSend: begin
              if (m_axi_wready) begin
                wvalid_q <= 1'b0;
                beat_q   <= beat_q + BeatsW'(1);
                wcnt_q   <= wcnt_q - 8'd1;
                wst_q    <= WReq;
                if (wlast_q) begin
                  state_q <= DmaWrResp;
                end
              end
            end
            default: wst_q <= WReq;
          endcase
        end
        DmaWrResp: begin
          if (m_axi_awready) begin
            awvalid_q <= 1'b0;
          end
          if (m_axi_bvalid) begin
            addr_q <= next_addr;
            if (bresp_err) begin
              err_q <= 1'b1;
            end
            state_q <= (err_q || bresp_err || rem_q == '0) ? DmaDone : DmaWrStart;
          end
        end
        DmaDone:  state_q <= DmaIdle;
        default:  state_q <= DmaIdle;
      endcase
    end
  end

  assign done_o     = (state_q == DmaDone);
  assign err_o      = err_q;

  assign rd_valid_o = (state_q == DmaRdData) && m_axi_rvalid;
  assign rd_idx_o   = beat_q;
  assign rd_data_o  = m_axi_rdata;

  assign src_req_o  = (state_q == DmaWrData) && (wst_q == WReq);
  assign src_idx_o  = beat_q;

  assign m_axi_awid    = 1'b0;
  assign m_axi_awaddr  = addr_q;
  assign m_axi_awlen   = len_q;
  assign m_axi_awsize  = 3'(BusAlign);
  assign m_axi_awburst = 2'b01;  // INCR
  assign m_axi_awlock  = 1'b0;
  assign m_axi_awcache = 4'b0011;
  assign m_axi_awprot  = 3'b000;
  assign m_axi_awvalid = awvalid_q;
  assign m_axi_wdata   = wdata_q;
  assign m_axi_wstrb   = wstrb_q;
  assign m_axi_wlast   = wlast_q;
  assign m_axi_wvalid  = wvalid_q;
  assign m_axi_bready  = (state_q == DmaWrResp);
  assign m_axi_arid    = 1'b0;
  assign m_axi_araddr  = addr_q;
  assign m_axi_arlen   = len_q;
  assign m_axi_arsize  = 3'(BusAlign);
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = arvalid_q;
  assign m_axi_rready  = (state_q == DmaRdData);

  // The IDs are constant: one transaction is in flight at a time.
  logic unused_ids;
  assign unused_ids = ^{m_axi_bid, m_axi_rid};

`ifndef SYNTHESIS
  // Assertions: AXI4 master handshake rules (a VALID stays high with a stable payload until READY),
  // INCR bursts inside one 4 KiB page, legal states (immediate assertions: Icarus 11 runs them too).
  logic                      ar_wait_q, aw_wait_q, w_wait_q;
  logic [AxiAddrWidth+7:0]   ar_pl_q, aw_pl_q;
  logic [AxiDataWidth+AxiDataWidth/8:0] w_pl_q;
  logic [PageAw:0]           ar_end, aw_end;  // end of the burst in its page, in bytes
  assign ar_end = (PageAw + 1)'(m_axi_araddr[PageAw-1:0]) + ((PageAw + 1)'(m_axi_arlen) << BusAlign)
                + (PageAw + 1)'(BusBytes);
  assign aw_end = (PageAw + 1)'(m_axi_awaddr[PageAw-1:0]) + ((PageAw + 1)'(m_axi_awlen) << BusAlign)
                + (PageAw + 1)'(BusBytes);
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      ar_wait_q <= 1'b0;
      aw_wait_q <= 1'b0;
      w_wait_q  <= 1'b0;
      ar_pl_q   <= '0;
      aw_pl_q   <= '0;
      w_pl_q    <= '0;
    end else begin
      ar_wait_q <= m_axi_arvalid && !m_axi_arready;
      aw_wait_q <= m_axi_awvalid && !m_axi_awready;
      w_wait_q  <= m_axi_wvalid && !m_axi_wready;
      ar_pl_q   <= {m_axi_araddr, m_axi_arlen};
      aw_pl_q   <= {m_axi_awaddr, m_axi_awlen};
      w_pl_q    <= {m_axi_wdata, m_axi_wstrb, m_axi_wlast};
      if (ar_wait_q) begin
        assert (m_axi_arvalid && {m_axi_araddr, m_axi_arlen} == ar_pl_q)
          else $fatal(1, "pqa_dma: ARVALID dropped or AR payload changed before ARREADY");
      end
      if (aw_wait_q) begin
        assert (m_axi_awvalid && {m_axi_awaddr, m_axi_awlen} == aw_pl_q)
          else $fatal(1, "pqa_dma: AWVALID dropped or AW payload changed before AWREADY");
      end
      if (w_wait_q) begin
        assert (m_axi_wvalid && {m_axi_wdata, m_axi_wstrb, m_axi_wlast} == w_pl_q)
          else $fatal(1, "pqa_dma: WVALID dropped or W payload changed before WREADY");
      end
      if (m_axi_arvalid) begin
        assert (m_axi_araddr[BusAlign-1:0] == '0 && ar_end <= (PageAw + 1)'(1 << PageAw))
          else $fatal(1, "pqa_dma: AR burst misaligned or crossing 4 KiB: %h len %0d", m_axi_araddr, m_axi_arlen);
      end
      if (m_axi_awvalid) begin
        assert (m_axi_awaddr[BusAlign-1:0] == '0 && aw_end <= (PageAw + 1)'(1 << PageAw))
          else $fatal(1, "pqa_dma: AW burst misaligned or crossing 4 KiB: %h len %0d", m_axi_awaddr, m_axi_awlen);
      end
      if (m_axi_wvalid && m_axi_wlast) begin
        assert (wcnt_q == 8'd0) else $fatal(1, "pqa_dma: WLAST before the last beat of the burst");
      end
      if (m_axi_wvalid) begin
        assert (m_axi_wstrb != '0) else $fatal(1, "pqa_dma: W beat without strobes");
      end
      assert (state_q <= DmaDone) else $fatal(1, "pqa_dma: illegal state %0d", state_q);
      assert (!(state_q == DmaIdle && (m_axi_arvalid || m_axi_awvalid || m_axi_wvalid)))
        else $fatal(1, "pqa_dma: AXI request while idle");
    end
  end
`endif

endmodule

`default_nettype wire
