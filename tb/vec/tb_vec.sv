// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_vec (with its pqa_postproc): the act and output buffers (pqa_widemem, as in
// pqa_top: VL bytes at any offset) with a load port for the test; the out buffer's read port is the vector unit's, or the test's
// while peek_i is high (as pqa_top gives it to the DMA between instructions). A monitor counts, in HDL, so
// that the test touches no signal per cycle while the unit runs:
//   cycles_o: cycles from the last start cycle to the current one, both included (read it during the
//             done cycle: the op's cycle count, start and done cycles included);
//   writes_o: output bytes written since the last start, the current cycle's write included;
//   err_o:    sticky: [0] a write whose byte enables are not lanes 0 .. j-1, [1] a write of an op not at
//             the output byte after the bytes written so far, [2] a write outside an op (after done, before
//             a start), [3] done outside an op or twice.

`default_nettype none

module tb_vec #(
  parameter int ActBytes = 4096,
  parameter int OutBytes = 4096,
  parameter int VL       = 8
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

  localparam int Port = (VL > 8) ? VL : 8;

  logic [31:0]       act_roff, vec_out_roff, out_woff;
  logic [Port*8-1:0] act_rline, out_rline;
  logic [VL*8-1:0]   out_wdata;
  logic              out_we, done;
  logic [VL-1:0]     out_wbe;

  pqa_widemem #(.Bytes(ActBytes), .WideBytes(VL)) u_act (
    .clk_i(clk_i), .we_i(load_we_i && !load_sel_i), .woff_i({13'd0, load_addr_i, 3'd0}),
    .wdata_i((Port*8)'(load_data_i)), .wbe_i(Port'(8'hff)), .roff_i(act_roff), .rdata_o(act_rline)
  );
  pqa_widemem #(.Bytes(OutBytes), .WideBytes(VL)) u_out (
    .clk_i(clk_i), .we_i(out_we || (load_we_i && load_sel_i)),
    .woff_i(out_we ? out_woff : {13'd0, load_addr_i, 3'd0}),
    .wdata_i(out_we ? (Port*8)'(out_wdata) : (Port*8)'(load_data_i)),
    .wbe_i(out_we ? Port'(out_wbe) : Port'(8'hff)),
    .roff_i(peek_i ? {13'd0, out_raddr_i, 3'd0} : vec_out_roff), .rdata_o(out_rline)
  );

  pqa_vec #(.ActW(8), .ActBytes(ActBytes), .OutBytes(OutBytes), .VL(VL)) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .op_add_i(op_add_i), .fmap_h_i(fmap_h_i),
    .fmap_w_i(fmap_w_i), .fmap_ch_i(fmap_ch_i), .n_i(n_i), .ma_i(ma_i), .mb_i(mb_i), .mult_i(mult_i),
    .shift_i(shift_i), .relu_i(relu_i), .unsigned_i(unsigned_i), .bits_i(bits_i),
    .act_roff_o(act_roff), .act_rdata_i(act_rline[VL*8-1:0]), .out_roff_o(vec_out_roff),
    .out_rdata_i(out_rline[VL*8-1:0]), .out_we_o(out_we), .out_woff_o(out_woff), .out_wdata_o(out_wdata),
    .out_wbe_o(out_wbe), .done_o(done)
  );

  // Monitor.
  logic        busy_q;
  logic [31:0] cnt_q, start_cnt_q, writes_q;
  logic [3:0]  err_q;
  logic [31:0] wbytes;   // bytes of this write
  logic        lowlanes;  // its enables are lanes 0 .. wbytes-1

  always_comb begin
    wbytes   = '0;
    lowlanes = 1'b1;
    for (int b = 0; b < VL; b++) begin
      if (out_wbe[b]) begin
        wbytes = wbytes + 32'd1;
        if (32'(b) != wbytes - 32'd1) lowlanes = 1'b0;
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
        writes_q <= writes_q + wbytes;
        if (!lowlanes || wbytes == '0) err_q[0] <= 1'b1;
        if (out_woff != writes_q) err_q[1] <= 1'b1;
        if (!busy_q) err_q[2] <= 1'b1;
      end
      if (done) begin
        busy_q <= 1'b0;
        if (!busy_q) err_q[3] <= 1'b1;
      end
    end
  end

  assign cycles_o    = cnt_q - start_cnt_q + 32'd1;
  assign writes_o    = writes_q + (out_we ? wbytes : 32'd0);
  assign err_o       = err_q;
  assign out_rdata_o = out_rline[63:0];
  assign done_o      = done;

  logic unused;
  assign unused = ^{load_addr_i, out_raddr_i, act_rline, out_rline};

endmodule

`default_nettype wire
