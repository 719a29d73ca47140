// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench-only external memory for long runs: an AXI4 slave written in HDL, so that no Python runs
// per cycle (cocotbext-axi's AxiRam stays the verification model, with random latency and
// backpressure). Behaviour, as AxiRam as the pyuvm environment wraps it and as the golden simulator
// (sw/pqcompile/sim.py) models the bus:
// - the memory holds `mem_bytes` bytes (plusarg, at most MemBytes): word w answers OKAY when all of its
//   bytes lie inside the memory, DECERR otherwise (a read returns 0, a write is dropped), beat by beat;
// - INCR bursts of up to 256 beats of AxiDataWidth bits (ARSIZE/AWSIZE = the bus width), as pqa_dma
//   issues them; byte strobes on writes;
// - up to 8 read and 8 write bursts accepted ahead (AR and AW queues), answered in order: read data
//   one beat a cycle from `lat` cycles after the AR was taken (RVALID stays high while RREADY is low),
//   W beats one a cycle for the oldest AW (none before its AW), B the cycle after WLAST;
// - an optional bandwidth limit: at most `bw` bytes a cycle on average, read and write beats together.
// Plusargs (read at time 0): +PQA_MEM_HEX=<file> ($readmemh image, one bus word a line, `@` word
// addresses, words never written read 0), +PQA_MEM_BYTES=<n>, +PQA_MEM_DUMP=<file>: a rising dump_i
// writes words 0 .. mem_bytes/word-1 there with $writememh; +PQA_MEM_BW=<bytes a cycle> (0 or absent:
// one bus word a cycle per channel); +PQA_MEM_LAT=<cycles> (read latency beyond the one cycle of the AR
// handshake; default 0).

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
  // Bandwidth: a byte budget shared by the read and the write channel. It grows by bw bytes a cycle
  // (capped at two bus words plus bw, so an idle memory banks little) and a beat in either direction
  // spends a bus word; a channel offers a beat only when the budget covers it (the read channel first;
  // a read beat offered keeps its share until it is taken, so RVALID never drops). bw = 0: unlimited.
  // ---------------------------------------------------------------------------------------------
  localparam int BudgetW = 32;
  logic [BudgetW-1:0] budget_q, budget_cap;
  logic [BudgetW-1:0] bw, lat;  // +PQA_MEM_BW, +PQA_MEM_LAT
  logic               r_ok, w_ok, r_take, w_take;

  initial begin : knobs
    int v;
    bw  = '0;
    lat = '0;
    if ($value$plusargs("PQA_MEM_BW=%d", v)) begin
      bw = BudgetW'(v);
    end
    if ($value$plusargs("PQA_MEM_LAT=%d", v)) begin
      lat = BudgetW'(v);
    end
  end
  assign budget_cap = BudgetW'(2 * WordBytes) + bw;
  assign r_ok       = (bw == '0) || (budget_q >= BudgetW'(WordBytes));
  assign w_ok       = (bw == '0) || (budget_q >= BudgetW'((r_ok && s_axi_rvalid ? 2 : 1) * WordBytes));

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      budget_q <= '0;
    end else if (bw != '0) begin
      budget_q <= ((budget_q + bw > budget_cap) ? budget_cap : budget_q + bw)
                - (r_take ? BudgetW'(WordBytes) : '0) - (w_take ? BudgetW'(WordBytes) : '0);
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Read channel: a queue of up to QDepth accepted bursts; the head burst's beats follow one a cycle
  // (budget allowing) from `lat` cycles after its AR was taken.
  // ---------------------------------------------------------------------------------------------
  localparam int QDepth = 8;
  localparam int QAw    = $clog2(QDepth);
  localparam int TimeW  = 32;
  logic [TimeW-1:0] now_q;
  logic [WaW-1:0]   arq_addr [QDepth];
  logic [7:0]       arq_len  [QDepth];
  logic [TimeW-1:0] arq_time [QDepth];  // the cycle from which its data may flow
  logic [QAw:0]     arq_cnt_q;
  logic [QAw-1:0]   arq_rd_q, arq_wr_q;
  logic [7:0]       rd_beat_q;          // beats of the head burst sent
  logic [WaW-1:0]   rd_addr;
  logic             rd_ok, rd_head;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      now_q <= '0;
    end else begin
      now_q <= now_q + 1'b1;
    end
  end

  assign rd_head       = (arq_cnt_q != '0) && (now_q >= arq_time[arq_rd_q]);
  assign rd_addr       = arq_addr[arq_rd_q] + WaW'(rd_beat_q);
  assign rd_ok         = {1'b0, rd_addr} < limit;
  assign s_axi_arready = (arq_cnt_q != (QAw + 1)'(QDepth));
  assign s_axi_rvalid  = rd_head && r_ok;
  assign r_take        = s_axi_rvalid && s_axi_rready;
  assign s_axi_rid     = '0;
  assign s_axi_rlast   = (rd_beat_q == arq_len[arq_rd_q]);
  assign s_axi_rresp   = rd_ok ? RespOkay : RespDecerr;
  assign s_axi_rdata   = rd_ok ? mem[rd_addr[IdxW-1:0]] : '0;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      arq_cnt_q <= '0;
      arq_rd_q  <= '0;
      arq_wr_q  <= '0;
      rd_beat_q <= '0;
    end else begin
      if (s_axi_arvalid && s_axi_arready) begin
        arq_addr[arq_wr_q] <= s_axi_araddr[AxiAddrWidth-1:WordShift];
        arq_len[arq_wr_q]  <= s_axi_arlen;
        arq_time[arq_wr_q] <= now_q + TimeW'(lat) + 1'b1;
        arq_wr_q           <= arq_wr_q + 1'b1;
      end
      if (r_take) begin
        rd_beat_q <= rd_beat_q + 8'd1;
        if (s_axi_rlast) begin
          rd_beat_q <= '0;
          arq_rd_q  <= arq_rd_q + 1'b1;
        end
      end
      arq_cnt_q <= arq_cnt_q + (QAw + 1)'(s_axi_arvalid && s_axi_arready) - (QAw + 1)'(r_take && s_axi_rlast);
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Write channel: a queue of up to QDepth accepted AWs; W beats are taken for the head AW, one a cycle
  // (budget allowing); WLAST retires it and queues its B (DECERR when any of its beats was outside
  // the memory). AW is taken while the AWs and the unanswered Bs together number fewer than QDepth.
  // ---------------------------------------------------------------------------------------------
  logic [WaW-1:0] awq_addr [QDepth];
  logic [QAw:0]   awq_cnt_q, bq_cnt_q;
  logic [QAw-1:0] awq_rd_q, awq_wr_q;
  logic [7:0]     wr_beat_q;
  logic           wr_bad_q;             // a beat of the head burst was outside the memory
  logic [QDepth-1:0] bq_resp_q;         // 1: DECERR, in order
  logic [QAw-1:0] bq_rd_q, bq_wr_q;
  logic [WaW-1:0] wr_addr;
  logic           wr_ok;

  assign wr_addr       = awq_addr[awq_rd_q] + WaW'(wr_beat_q);
  assign wr_ok         = {1'b0, wr_addr} < limit;
  assign s_axi_awready = ((QAw + 1)'(awq_cnt_q + bq_cnt_q) < (QAw + 1)'(QDepth));
  assign s_axi_wready  = (awq_cnt_q != '0) && w_ok;
  assign w_take        = s_axi_wvalid && s_axi_wready;
  assign s_axi_bvalid  = (bq_cnt_q != '0);
  assign s_axi_bresp   = bq_resp_q[bq_rd_q] ? RespDecerr : RespOkay;
  assign s_axi_bid     = '0;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      awq_cnt_q <= '0;
      awq_rd_q  <= '0;
      awq_wr_q  <= '0;
      wr_beat_q <= '0;
      wr_bad_q  <= 1'b0;
      bq_cnt_q  <= '0;
      bq_rd_q   <= '0;
      bq_wr_q   <= '0;
      bq_resp_q <= '0;
    end else begin
      if (s_axi_awvalid && s_axi_awready) begin
        awq_addr[awq_wr_q] <= s_axi_awaddr[AxiAddrWidth-1:WordShift];
        awq_wr_q           <= awq_wr_q + 1'b1;
      end
      if (w_take) begin
        wr_beat_q <= wr_beat_q + 8'd1;
        if (!wr_ok) begin
          wr_bad_q <= 1'b1;
        end
        if (s_axi_wlast) begin
          wr_beat_q          <= '0;
          wr_bad_q           <= 1'b0;
          awq_rd_q           <= awq_rd_q + 1'b1;
          bq_resp_q[bq_wr_q] <= wr_bad_q || !wr_ok;
          bq_wr_q            <= bq_wr_q + 1'b1;
        end
      end
      if (s_axi_bvalid && s_axi_bready) begin
        bq_rd_q <= bq_rd_q + 1'b1;
      end
      awq_cnt_q <= awq_cnt_q + (QAw + 1)'(s_axi_awvalid && s_axi_awready) - (QAw + 1)'(w_take && s_axi_wlast);
      bq_cnt_q  <= bq_cnt_q + (QAw + 1)'(w_take && s_axi_wlast) - (QAw + 1)'(s_axi_bvalid && s_axi_bready);
    end
  end

  always_ff @(posedge clk_i) begin
    if (w_take && wr_ok) begin
      for (int b = 0; b < WordBytes; b++) begin
        if (s_axi_wstrb[b]) begin
          mem[wr_addr[IdxW-1:0]][8*b +: 8] <= s_axi_wdata[8*b +: 8];
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

  // IDs: bursts of a direction are answered in order; burst length: WLAST ends a write burst.
  logic unused;
  assign unused = ^{s_axi_awid, s_axi_arid, s_axi_awlen, s_axi_awaddr[WordShift-1:0],
                    s_axi_araddr[WordShift-1:0]};

endmodule

`default_nettype wire
