// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench-only external memory for long runs: an AXI4 slave written in HDL, so that no Python runs
// per cycle (cocotbext-axi's AxiRam stays the verification model, with random latency and
// backpressure). Behaviour, as AxiRam as the pyuvm environment wraps it and as the golden simulator
// (sw/pqcompile/sim.py) models the bus:
// - the memory holds `mem_bytes` bytes (plusarg, at most MemBytes): word w answers OKAY when all of its
//   bytes lie inside the memory, DECERR otherwise (a read returns 0, a write is dropped), beat by beat;
// - INCR bursts of up to 256 beats of AxiDataWidth bits (ARSIZE/AWSIZE = the bus width), as pqa_dma
//   issues them, one read and one write burst at a time; byte strobes on writes;
// - AR and AW are taken when the channel is idle; read data follow one beat a cycle (RVALID stays
//   high while RREADY is low; one read and one write burst are never in flight together, as in pqa_dma);
//   W is taken from the cycle after AW, one beat a cycle; B follows WLAST.
// Plusargs (read at time 0): +PQA_MEM_HEX=<file> ($readmemh image, one bus word a line, `@` word
// addresses, words never written read 0), +PQA_MEM_BYTES=<n>, +PQA_MEM_DUMP=<file>: a rising dump_i
// writes words 0 .. mem_bytes/word-1 there with $writememh.

`default_nettype none

module pqa_axi_mem #(
  parameter int AxiDataWidth = 64,
  parameter int AxiAddrWidth = 32,
  parameter int MemBytes     = 1 << 24  // capacity; the run's size comes from +PQA_MEM_BYTES
) (
  input  logic                      clk_i,
  input  logic                      rst_ni,
  input  logic                      dump_i,
  // AXI4 slave
  input  logic [0:0]                s_axi_awid,
  input  logic [AxiAddrWidth-1:0]   s_axi_awaddr,
  input  logic [7:0]                s_axi_awlen,
  input  logic [2:0]                s_axi_awsize,
  input  logic [1:0]                s_axi_awburst,
  input  logic                      s_axi_awvalid,
  output logic                      s_axi_awready,
  input  logic [AxiDataWidth-1:0]   s_axi_wdata,
  input  logic [AxiDataWidth/8-1:0] s_axi_wstrb,
  input  logic                      s_axi_wlast,
  input  logic                      s_axi_wvalid,
  output logic                      s_axi_wready,
  output logic [0:0]                s_axi_bid,
  output logic [1:0]                s_axi_bresp,
  output logic                      s_axi_bvalid,
  input  logic                      s_axi_bready,
  input  logic [0:0]                s_axi_arid,
  input  logic [AxiAddrWidth-1:0]   s_axi_araddr,
  input  logic [7:0]                s_axi_arlen,
  input  logic [2:0]                s_axi_arsize,
  input  logic [1:0]                s_axi_arburst,
  input  logic                      s_axi_arvalid,
  output logic                      s_axi_arready,
  output logic [0:0]                s_axi_rid,
  output logic [AxiDataWidth-1:0]   s_axi_rdata,
  output logic [1:0]                s_axi_rresp,
  output logic                      s_axi_rlast,
  output logic                      s_axi_rvalid,
  input  logic                      s_axi_rready
);

  localparam int WordBytes = AxiDataWidth / 8;
  localparam int WordShift = $clog2(WordBytes);
  localparam int Words     = MemBytes / WordBytes;
  localparam int WaW       = AxiAddrWidth - WordShift;  // word-address width
  localparam int IdxW      = $clog2(Words);              // array index width
  localparam logic [1:0] RespOkay   = 2'b00;
  localparam logic [1:0] RespDecerr = 2'b11;
  localparam logic [1:0] BurstIncr  = 2'b01;

  logic [AxiDataWidth-1:0] mem [0:Words-1];  // (4-state: Icarus 11 mishandles 2-state arrays)

  // Words [0, limit) exist; set at time 0 from +PQA_MEM_BYTES.
  logic [WaW:0] limit;
  string hex_file, dump_file;

  initial begin : load
    longint mem_bytes;
    int     fd;
    if (!$value$plusargs("PQA_MEM_BYTES=%d", mem_bytes)) begin
      mem_bytes = longint'(MemBytes);
    end
    if (mem_bytes < 0 || mem_bytes > longint'(MemBytes)) begin
      $fatal(1, "pqa_axi_mem: +PQA_MEM_BYTES=%0d exceeds the capacity MemBytes=%0d", mem_bytes, MemBytes);
    end
    limit = (WaW + 1)'(mem_bytes / WordBytes);
    for (int w = 0; w < int'(limit); w++) begin  // words the image does not set read 0
      mem[w[IdxW-1:0]] = '0;
    end
    if ($value$plusargs("PQA_MEM_HEX=%s", hex_file)) begin
      fd = $fopen(hex_file, "r");  // $readmemh only warns about a missing file
      if (fd == 0) begin
        $fatal(1, "pqa_axi_mem: cannot open +PQA_MEM_HEX=%s", hex_file);
      end
      $fclose(fd);
      $readmemh(hex_file, mem, 0);
    end
    if (!$value$plusargs("PQA_MEM_DUMP=%s", dump_file)) begin
      dump_file = "";
    end
  end

  logic dump_q;
  always @(posedge clk_i) begin
    dump_q <= dump_i;
    if (dump_i && !dump_q) begin
      if (dump_file == "") begin
        $fatal(1, "pqa_axi_mem: dump requested without +PQA_MEM_DUMP");
      end else if (limit != 0) begin
        $writememh(dump_file, mem, 0, int'(limit) - 1);
      end
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Read channel: one burst at a time, one beat a cycle; the data register is loaded with the word of
  // the next beat (pqa_dma never reads and writes at the same time).
  // ---------------------------------------------------------------------------------------------
  logic                    rd_busy_q;
  logic [WaW-1:0]          rd_addr_q, rd_next;
  logic [7:0]              rd_left_q;
  logic [AxiDataWidth-1:0] rdata_q;
  logic                    rd_ok, rd_load;

  assign rd_ok         = {1'b0, rd_addr_q} < limit;
  assign rd_next       = rd_busy_q ? rd_addr_q + 1'b1 : s_axi_araddr[AxiAddrWidth-1:WordShift];
  assign rd_load       = rd_busy_q ? s_axi_rready : s_axi_arvalid;
  assign s_axi_arready = !rd_busy_q;
  assign s_axi_rvalid  = rd_busy_q;
  assign s_axi_rid     = '0;
  assign s_axi_rlast   = (rd_left_q == 8'd0);
  assign s_axi_rresp   = rd_ok ? RespOkay : RespDecerr;
  assign s_axi_rdata   = rdata_q;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      rd_busy_q <= 1'b0;
      rd_addr_q <= '0;
      rd_left_q <= '0;
    end else if (!rd_busy_q) begin
      if (s_axi_arvalid) begin
        rd_busy_q <= 1'b1;
        rd_addr_q <= rd_next;
        rd_left_q <= s_axi_arlen;
      end
    end else if (s_axi_rready) begin
      rd_addr_q <= rd_next;
      rd_left_q <= rd_left_q - 8'd1;
      if (rd_left_q == 8'd0) begin
        rd_busy_q <= 1'b0;
      end
    end
  end

  always_ff @(posedge clk_i) begin
    if (rd_load) begin
      if ({1'b0, rd_next} < limit) begin
        rdata_q <= mem[rd_next[IdxW-1:0]];
      end else begin
        rdata_q <= '0;
      end
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Write channel: AW, then the W beats, then B; a DECERR on any beat makes the burst's B DECERR.
  // ---------------------------------------------------------------------------------------------
  logic           wr_busy_q, bvalid_q;
  logic [WaW-1:0] wr_addr_q;
  logic [1:0]     bresp_q;
  logic           wr_ok;

  assign wr_ok         = {1'b0, wr_addr_q} < limit;
  assign s_axi_awready = !wr_busy_q && !bvalid_q;
  assign s_axi_wready  = wr_busy_q;
  assign s_axi_bvalid  = bvalid_q;
  assign s_axi_bresp   = bresp_q;
  assign s_axi_bid     = '0;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wr_busy_q <= 1'b0;
      bvalid_q  <= 1'b0;
      wr_addr_q <= '0;
      bresp_q   <= RespOkay;
    end else begin
      if (!wr_busy_q && !bvalid_q && s_axi_awvalid) begin
        wr_busy_q <= 1'b1;
        wr_addr_q <= s_axi_awaddr[AxiAddrWidth-1:WordShift];
        bresp_q   <= RespOkay;
      end
      if (wr_busy_q && s_axi_wvalid) begin
        wr_addr_q <= wr_addr_q + 1'b1;
        if (!wr_ok) begin
          bresp_q <= RespDecerr;
        end
        if (s_axi_wlast) begin
          wr_busy_q <= 1'b0;
          bvalid_q  <= 1'b1;
        end
      end
      if (bvalid_q && s_axi_bready) begin
        bvalid_q <= 1'b0;
      end
    end
  end

  always_ff @(posedge clk_i) begin
    if (wr_busy_q && s_axi_wvalid && wr_ok) begin
      for (int b = 0; b < WordBytes; b++) begin
        if (s_axi_wstrb[b]) begin
          mem[wr_addr_q[IdxW-1:0]][8*b +: 8] <= s_axi_wdata[8*b +: 8];
        end
      end
    end
  end

  // Only what pqa_dma issues is modelled: full-width INCR bursts.
  always @(posedge clk_i) begin
    if (s_axi_arvalid && s_axi_arready) begin
      assert (s_axi_arburst == BurstIncr && s_axi_arsize == 3'(WordShift))
        else $fatal(1, "pqa_axi_mem: AR burst %0d size %0d not modelled (INCR, full width only)",
                    s_axi_arburst, s_axi_arsize);
    end
    if (s_axi_awvalid && s_axi_awready) begin
      assert (s_axi_awburst == BurstIncr && s_axi_awsize == 3'(WordShift))
        else $fatal(1, "pqa_axi_mem: AW burst %0d size %0d not modelled (INCR, full width only)",
                    s_axi_awburst, s_axi_awsize);
    end
  end

  // IDs: one burst at a time per direction; burst length: WLAST ends a write burst.
  logic unused;
  assign unused = ^{s_axi_awid, s_axi_arid, s_axi_awlen, s_axi_awaddr[WordShift-1:0],
                    s_axi_araddr[WordShift-1:0]};

endmodule

`default_nettype wire
