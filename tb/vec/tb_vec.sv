// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_vec (with its pqa_postproc): the act and output buffers (pqa_ram, as in
// pqa_top) with a load port for the test; the out buffer's read port is the vector unit's, or the test's
// while peek_i is high (as pqa_top gives it to the DMA between instructions). A monitor counts, in HDL, so
// that the test touches no signal per cycle while the unit runs:
//   cycles_o: cycles from the last start cycle to the current one, both included (read it during the
//             done cycle: the op's cycle count, start and done cycles included);
//   writes_o: output-byte writes since the last start, the current cycle's write included;
//   err_o:    sticky: [0] a write whose byte enable is not one-hot, [1] the k-th write of an op not at
//             output byte k, [2] a write outside an op (after done, before a start), [3] done outside
//             an op or twice.

`default_nettype none

module tb_vec #(
  parameter int ActBytes = 4096,
  parameter int OutBytes = 4096
) (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        start_i,
  input  logic        op_add_i,
  input  logic [15:0] fmap_h_i,
  input  logic [15:0] fmap_w_i,
  input  logic [15:0] fmap_ch_i,
  input  logic [23:0] n_i,
  input  logic [15:0] ma_i,
  input  logic [15:0] mb_i,
  input  logic [15:0] mult_i,
  input  logic [5:0]  shift_i,
  input  logic        relu_i,
  input  logic        unsigned_i,
  input  logic [3:0]  bits_i,
  input  logic        load_we_i,
  input  logic        load_sel_i,    // 0: act buffer, 1: output buffer
  input  logic [15:0] load_addr_i,   // word address
  input  logic [63:0] load_data_i,
  input  logic        peek_i,        // 1: the test owns the out buffer's read port
  input  logic [15:0] out_raddr_i,   // word address, data one cycle later
  output logic [63:0] out_rdata_o,
  output logic [31:0] cycles_o,
  output logic [31:0] writes_o,
  output logic [3:0]  err_o,
  output logic        done_o
);

  localparam int ActAw = $clog2(ActBytes / 8);
  localparam int OutAw = $clog2(OutBytes / 8);

  logic [ActAw-1:0] act_raddr;
  logic [OutAw-1:0] vec_out_raddr, out_waddr;
  logic [63:0]      act_rdata, out_rdata, out_wdata;
  logic             out_we, done;
  logic [7:0]       out_wbe;

  pqa_ram #(.Words(ActBytes / 8)) u_act (
    .clk_i(clk_i), .we_i(load_we_i && !load_sel_i), .waddr_i(load_addr_i[ActAw-1:0]), .wdata_i(load_data_i),
    .wbe_i(8'hff), .raddr_i(act_raddr), .rdata_o(act_rdata)
  );
  pqa_ram #(.Words(OutBytes / 8)) u_out (
    .clk_i(clk_i), .we_i(out_we || (load_we_i && load_sel_i)),
    .waddr_i(out_we ? out_waddr : load_addr_i[OutAw-1:0]), .wdata_i(out_we ? out_wdata : load_data_i),
    .wbe_i(out_we ? out_wbe : 8'hff),
    .raddr_i(peek_i ? out_raddr_i[OutAw-1:0] : vec_out_raddr), .rdata_o(out_rdata)
  );

  pqa_vec #(.ActW(8), .ActBytes(ActBytes), .OutBytes(OutBytes)) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .op_add_i(op_add_i), .fmap_h_i(fmap_h_i),
    .fmap_w_i(fmap_w_i), .fmap_ch_i(fmap_ch_i), .n_i(n_i), .ma_i(ma_i), .mb_i(mb_i), .mult_i(mult_i),
    .shift_i(shift_i), .relu_i(relu_i), .unsigned_i(unsigned_i), .bits_i(bits_i),
    .act_raddr_o(act_raddr), .act_rdata_i(act_rdata), .out_raddr_o(vec_out_raddr), .out_rdata_i(out_rdata),
    .out_we_o(out_we), .out_waddr_o(out_waddr), .out_wdata_o(out_wdata), .out_wbe_o(out_wbe), .done_o(done)
  );

  // Monitor.
  logic        busy_q;
  logic [31:0] cnt_q, start_cnt_q, writes_q;
  logic [3:0]  err_q;
  logic [2:0]  wbyte;
  logic        onehot;

  always_comb begin
    wbyte  = 3'd0;
    onehot = 1'b0;
    for (int b = 0; b < 8; b++) begin
      if (out_wbe == 8'(1 << b)) begin
        wbyte  = 3'(b);
        onehot = 1'b1;
      end
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      busy_q      <= 1'b0;
      cnt_q       <= '0;
      start_cnt_q <= '0;
      writes_q    <= '0;
      err_q       <= '0;
    end else begin
      cnt_q <= cnt_q + 32'd1;
      if (start_i && !busy_q) begin
        busy_q      <= 1'b1;
        start_cnt_q <= cnt_q;
        writes_q    <= '0;
      end
      if (out_we) begin
        writes_q <= writes_q + 32'd1;
        if (!onehot) err_q[0] <= 1'b1;
        if ({{(32 - OutAw - 3){1'b0}}, out_waddr, wbyte} != writes_q) err_q[1] <= 1'b1;
        if (!busy_q) err_q[2] <= 1'b1;
      end
      if (done) begin
        busy_q <= 1'b0;
        if (!busy_q) err_q[3] <= 1'b1;
      end
    end
  end

  assign cycles_o    = cnt_q - start_cnt_q + 32'd1;
  assign writes_o    = writes_q + {31'd0, out_we};
  assign err_o       = err_q;
  assign out_rdata_o = out_rdata;
  assign done_o      = done;

  logic unused;
  assign unused = ^{load_addr_i, out_raddr_i};

endmodule

`default_nettype wire
