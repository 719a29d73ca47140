// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// AXI4 master DMA: a read engine and a write engine, each with its own command port (a read or a write of
// `beats` bus words from `addr`), working concurrently. Transfers are split into INCR bursts of at most 256 beats that never cross a
// 4 KiB boundary; up to MaxBursts bursts of a command are in flight at once, so that a memory latency
// is hidden and both engines move one beat a cycle.
// Reads: every beat is handed out with its index (rd_valid_o, single cycle; RREADY is high while the
// engine is busy, so the consumer takes a beat every cycle). Writes: AW and W are driven concurrently
// (W follows the AWs issued, never ahead of them); each W beat is fetched from the source with
// src_req_o / src_idx_o and taken from src_data_i one cycle later (a registered-read RAM), a beat ahead
// of the bus; the last beat of the command uses last_strb.
// A non-OKAY response marks the command failed: no further burst is issued, the bursts already issued
// (at most MaxBursts - 1 after the failing one) complete, so the command always ends with nothing
// outstanding.
// Bus words are AxiDataWidth bits; AXI4 protocol fields have their standard widths.

`default_nettype none

module pqa_dma #(
  parameter int AxiAddrWidth = 32,
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int MaxBursts    = 4,  // bursts in flight per engine: a power of two, 2 or more
  // Derived, do not override.
  parameter int BeatsW       = pqa_pkg::LoadNbytesW - $clog2(AxiDataWidth / 8) + 1  // bus words of a command
) (
  input  logic                      clk_i,
  input  logic                      rst_ni,
  // read command (the read engine: taken while it is idle)
  input  logic                      rd_cmd_valid_i,
  input  logic [AxiAddrWidth-1:0]   rd_cmd_addr_i,
  input  logic [BeatsW-1:0]         rd_cmd_beats_i,
  output logic                      rd_done_o,       // single cycle: the read command ended
  output logic                      rd_err_o,        // with rd_done_o: it met a non-OKAY response
  // write command (the write engine: taken while it is idle)
  input  logic                      wr_cmd_valid_i,
  input  logic [AxiAddrWidth-1:0]   wr_cmd_addr_i,
  input  logic [BeatsW-1:0]         wr_cmd_beats_i,
  input  logic [AxiDataWidth/8-1:0] wr_cmd_last_strb_i,
  output logic                      wr_done_o,
  output logic                      wr_err_o,
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

  // AXI4: a burst moves at most 256 beats (8-bit len) and never crosses a 4 KiB page.
  localparam int MaxBurst  = 256;
  localparam int PageAw    = 12;                      // byte address bits of a 4 KiB page
  localparam int BusBytes  = AxiDataWidth / 8;
  localparam int BusAlign  = $clog2(BusBytes);        // byte-offset bits within a bus word
  localparam int PageBeats = (MaxBurst < (1 << PageAw) / BusBytes) ? MaxBurst : (1 << PageAw) / BusBytes;
  localparam int PageBw    = PageAw - BusAlign + 1;   // bits of a beat count within a page (to4k)
  localparam int OutW      = $clog2(MaxBursts + 1);   // bursts in flight

  // Beats of the burst that starts at bus word `word` of its 4 KiB page with rem beats left: min(rem, 256,
  // beats to the next 4 KiB).
  function automatic logic [BeatsW-1:0] burst_beats(logic [PageAw-BusAlign-1:0] word, logic [BeatsW-1:0] rem);
    logic [PageBw-1:0] to4k;
    logic [BeatsW-1:0] n;
    to4k = PageBw'(1 << (PageAw - BusAlign)) - PageBw'(word);
    n    = rem;
    if (n > BeatsW'(PageBeats)) begin
      n = BeatsW'(PageBeats);
    end
    if (n > BeatsW'(to4k)) begin
      n = BeatsW'(to4k);
    end
    burst_beats = n;  // (an assignment to the name: Yosys reads no `return`)
  endfunction

  // ---------------------------------------------------------------------------------------------
  // Read engine: AR bursts are issued back to back while fewer than MaxBursts are in flight; R beats
  // (in order, one ID) are handed out with their index. After an error response no further AR is issued;
  // the command ends when every issued burst has delivered its last beat.
  // ---------------------------------------------------------------------------------------------
  logic                    rd_busy_q, rd_err_q, rd_done_q;
  logic                    arvalid_q;
  logic [AxiAddrWidth-1:0] ar_addr_q, araddr_q;
  logic [BeatsW-1:0]       ar_rem_q, r_beat_q, ar_n;
  logic [7:0]              arlen_q;
  logic [OutW-1:0]         r_out_q;     // bursts issued whose last beat has not arrived
  logic                    ar_issue, r_last, rresp_err;

  assign rresp_err = (m_axi_rresp != 2'b00);
  assign ar_n      = burst_beats(ar_addr_q[PageAw-1:BusAlign], ar_rem_q);
  assign ar_issue  = rd_busy_q && !rd_err_q && (!arvalid_q || m_axi_arready) && (ar_rem_q != '0)
                   && (r_out_q < OutW'(MaxBursts));
  assign r_last    = m_axi_rvalid && m_axi_rlast;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      rd_busy_q <= 1'b0;
      rd_err_q  <= 1'b0;
      rd_done_q <= 1'b0;
      arvalid_q <= 1'b0;
      ar_addr_q <= '0;
      araddr_q  <= '0;
      ar_rem_q  <= '0;
      arlen_q   <= '0;
      r_beat_q  <= '0;
      r_out_q   <= '0;
    end else begin
      rd_done_q <= 1'b0;
      if (!rd_busy_q) begin
        if (rd_cmd_valid_i) begin
          rd_busy_q <= 1'b1;
          rd_err_q  <= 1'b0;
          ar_addr_q <= rd_cmd_addr_i;
          ar_rem_q  <= rd_cmd_beats_i;
          r_beat_q  <= '0;
        end
      end else begin
        if (arvalid_q && m_axi_arready) begin
          arvalid_q <= 1'b0;
        end
        if (ar_issue) begin
          arvalid_q <= 1'b1;
          araddr_q  <= ar_addr_q;
          arlen_q   <= 8'(ar_n - BeatsW'(1));
          ar_addr_q <= ar_addr_q + (AxiAddrWidth'(ar_n) << BusAlign);
          ar_rem_q  <= ar_rem_q - ar_n;
        end
        r_out_q <= r_out_q + OutW'(ar_issue) - OutW'(r_last);
        if (m_axi_rvalid) begin
          r_beat_q <= r_beat_q + BeatsW'(1);
          if (rresp_err) begin
            rd_err_q <= 1'b1;
          end
        end
        // the end: nothing left to issue (or an error seen) and nothing in flight
        if (!ar_issue && !arvalid_q && (ar_rem_q == '0 || rd_err_q || (m_axi_rvalid && rresp_err))
            && (r_out_q - OutW'(r_last)) == '0) begin
          rd_busy_q <= 1'b0;
          rd_done_q <= 1'b1;
        end
      end
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Write engine: AW bursts are issued back to back while fewer than MaxBursts await their response;
  // each issued burst's length enters a queue that the W side follows (so W never runs ahead of its
  // AW). Beat data are fetched from the source a beat ahead (src_req_o, data one cycle later) into a
  // two-entry queue: one W beat a cycle. After an error response no further AW is issued; the bursts
  // already issued complete (their W beats and B responses).
  // ---------------------------------------------------------------------------------------------
  logic                    wr_busy_q, wr_err_q, wr_done_q;
  logic                    awvalid_q;
  logic [AxiAddrWidth-1:0] aw_addr_q, awaddr_q;
  logic [BeatsW-1:0]       aw_rem_q, aw_n, src_idx_q, src_rem_q;
  logic [7:0]              awlen_q;
  logic [OutW-1:0]         b_out_q;     // bursts issued whose response has not arrived
  logic [AxiDataWidth/8-1:0] last_strb_q;
  logic                    aw_issue, bresp_err, b_take;
  // lengths (minus one) of the issued bursts whose W beats are not all sent
  logic [7:0]              len_fifo_q [MaxBursts];
  logic [OutW-1:0]         len_cnt_q;
  logic [$clog2(MaxBursts)-1:0] len_rd_q, len_wr_q;
  logic [7:0]              wcnt_q;      // W beats sent of the head burst
  // W data queue: two entries {strobes, data}, plus the beat being read from the source
  logic [AxiDataWidth/8+AxiDataWidth-1:0] wq_q [2];
  logic [1:0]              wq_cnt_q;
  logic                    wq_rd_q, wq_wr_q, src_pend_q;
  logic [AxiDataWidth/8-1:0] src_strb_q;
  logic                    w_go, w_take, src_go;

  assign bresp_err = (m_axi_bresp != 2'b00);
  assign aw_n      = burst_beats(aw_addr_q[PageAw-1:BusAlign], aw_rem_q);
  assign aw_issue  = wr_busy_q && !wr_err_q && (!awvalid_q || m_axi_awready) && (aw_rem_q != '0)
                   && (b_out_q < OutW'(MaxBursts));
  assign w_go      = wr_busy_q && (wq_cnt_q != '0) && (len_cnt_q != '0);   // WVALID
  assign w_take    = w_go && m_axi_wready;
  assign b_take    = m_axi_bvalid;                                          // BREADY is high while busy
  // a source read when its beat will have room: queue + pending - taken < 2
  assign src_go    = wr_busy_q && (src_rem_q != '0)
                   && ((2'(wq_cnt_q) + 2'(src_pend_q) - 2'(w_take)) < 2'd2);

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wr_busy_q   <= 1'b0;
      wr_err_q    <= 1'b0;
      wr_done_q   <= 1'b0;
      awvalid_q   <= 1'b0;
      aw_addr_q   <= '0;
      awaddr_q    <= '0;
      aw_rem_q    <= '0;
      awlen_q     <= '0;
      b_out_q     <= '0;
      last_strb_q <= '0;
      len_cnt_q   <= '0;
      len_rd_q    <= '0;
      len_wr_q    <= '0;
      wcnt_q      <= '0;
      wq_cnt_q    <= '0;
      wq_rd_q     <= 1'b0;
      wq_wr_q     <= 1'b0;
      src_pend_q  <= 1'b0;
      src_idx_q   <= '0;
      src_rem_q   <= '0;
      src_strb_q  <= '0;
      for (int i = 0; i < MaxBursts; i++) begin
        len_fifo_q[i] <= '0;
      end
      for (int i = 0; i < 2; i++) begin
        wq_q[i] <= '0;
      end
    end else begin
      wr_done_q <= 1'b0;
      if (!wr_busy_q) begin
        if (wr_cmd_valid_i) begin
          wr_busy_q   <= 1'b1;
          wr_err_q    <= 1'b0;
          aw_addr_q   <= wr_cmd_addr_i;
          aw_rem_q    <= wr_cmd_beats_i;
          src_rem_q   <= wr_cmd_beats_i;
          src_idx_q   <= '0;
          last_strb_q <= wr_cmd_last_strb_i;
          wq_cnt_q    <= '0;
          wq_rd_q     <= 1'b0;
          wq_wr_q     <= 1'b0;
          src_pend_q  <= 1'b0;
          len_cnt_q   <= '0;
          len_rd_q    <= '0;
          len_wr_q    <= '0;
          wcnt_q      <= '0;
        end
      end else begin
        if (awvalid_q && m_axi_awready) begin
          awvalid_q <= 1'b0;
        end
        if (aw_issue) begin
          awvalid_q            <= 1'b1;
          awaddr_q             <= aw_addr_q;
          awlen_q              <= 8'(aw_n - BeatsW'(1));
          aw_addr_q            <= aw_addr_q + (AxiAddrWidth'(aw_n) << BusAlign);
          aw_rem_q             <= aw_rem_q - aw_n;
          len_fifo_q[len_wr_q] <= 8'(aw_n - BeatsW'(1));
          len_wr_q             <= len_wr_q + 1'b1;
        end
        // source reads: the beat's data arrive next cycle and enter the queue
        src_pend_q <= src_go;
        if (src_go) begin
          src_idx_q  <= src_idx_q + BeatsW'(1);
          src_rem_q  <= src_rem_q - BeatsW'(1);
          src_strb_q <= (src_rem_q == BeatsW'(1)) ? last_strb_q : '1;
        end
        if (src_pend_q) begin
          wq_q[wq_wr_q] <= {src_strb_q, src_data_i};
          wq_wr_q       <= !wq_wr_q;
        end
        if (w_take) begin
          wq_rd_q <= !wq_rd_q;
          wcnt_q  <= wcnt_q + 8'd1;
          if (wcnt_q == len_fifo_q[len_rd_q]) begin
            wcnt_q   <= '0;
            len_rd_q <= len_rd_q + 1'b1;
          end
        end
        wq_cnt_q  <= wq_cnt_q + 2'(src_pend_q) - 2'(w_take);
        len_cnt_q <= len_cnt_q + OutW'(aw_issue) - OutW'(w_take && wcnt_q == len_fifo_q[len_rd_q]);
        b_out_q   <= b_out_q + OutW'(aw_issue) - OutW'(b_take);
        if (b_take && bresp_err) begin
          wr_err_q <= 1'b1;
        end
        // the end: nothing left to issue (or an error seen), every issued burst answered
        if (!aw_issue && !awvalid_q && (aw_rem_q == '0 || wr_err_q || (b_take && bresp_err))
            && (b_out_q - OutW'(b_take)) == '0) begin
          wr_busy_q <= 1'b0;
          wr_done_q <= 1'b1;
        end
      end
    end
  end

  assign rd_done_o  = rd_done_q;
  assign rd_err_o   = rd_err_q;
  assign wr_done_o  = wr_done_q;
  assign wr_err_o   = wr_err_q;

  assign rd_valid_o = rd_busy_q && m_axi_rvalid;
  assign rd_idx_o   = r_beat_q;
  assign rd_data_o  = m_axi_rdata;

  assign src_req_o  = src_go;
  assign src_idx_o  = src_idx_q;

  assign m_axi_awid    = 1'b0;
  assign m_axi_awaddr  = awaddr_q;
  assign m_axi_awlen   = awlen_q;
  assign m_axi_awsize  = 3'(BusAlign);
  assign m_axi_awburst = 2'b01;  // INCR
  assign m_axi_awlock  = 1'b0;
  assign m_axi_awcache = 4'b0011;
  assign m_axi_awprot  = 3'b000;
  assign m_axi_awvalid = awvalid_q;
  assign m_axi_wdata   = wq_q[wq_rd_q][AxiDataWidth-1:0];
  assign m_axi_wstrb   = wq_q[wq_rd_q][AxiDataWidth +: AxiDataWidth/8];
  assign m_axi_wlast   = (wcnt_q == len_fifo_q[len_rd_q]);
  assign m_axi_wvalid  = w_go;
  assign m_axi_bready  = wr_busy_q;
  assign m_axi_arid    = 1'b0;
  assign m_axi_araddr  = araddr_q;
  assign m_axi_arlen   = arlen_q;
  assign m_axi_arsize  = 3'(BusAlign);
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = arvalid_q;
  assign m_axi_rready  = rd_busy_q;

  // The IDs are constant: bursts of one direction complete in order.
  logic unused_ids;
  assign unused_ids = ^{m_axi_bid, m_axi_rid};

  if (MaxBursts < 2 || (MaxBursts & (MaxBursts - 1)) != 0) begin : gen_bursts_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_dma: MaxBursts=%0d must be a power of two, 2 or more", MaxBursts);
  end

`ifndef SYNTHESIS
  // Assertions: AXI4 master handshake rules (a VALID stays high with a stable payload until READY),
  // INCR bursts inside one 4 KiB page, bounded bursts in flight (immediate assertions: Icarus 11 runs
  // them too).
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
      if (m_axi_wvalid) begin
        assert (m_axi_wstrb != '0) else $fatal(1, "pqa_dma: W beat without strobes");
      end
      assert (r_out_q <= OutW'(MaxBursts) && b_out_q <= OutW'(MaxBursts) && len_cnt_q <= b_out_q)
        else $fatal(1, "pqa_dma: %0d read / %0d write bursts in flight (at most %0d)", r_out_q, b_out_q,
                    MaxBursts);
      assert (!(m_axi_rvalid && !rd_busy_q) && !(m_axi_bvalid && !wr_busy_q))
        else $fatal(1, "pqa_dma: a response without a burst in flight");
      assert (!(rd_cmd_valid_i && rd_busy_q) && !(wr_cmd_valid_i && wr_busy_q))
        else $fatal(1, "pqa_dma: a command to a busy engine");
      assert (!(!rd_busy_q && m_axi_arvalid) && !(!wr_busy_q && (m_axi_awvalid || m_axi_wvalid)))
        else $fatal(1, "pqa_dma: AXI request while idle");
    end
  end
`endif

endmodule

`default_nettype wire
