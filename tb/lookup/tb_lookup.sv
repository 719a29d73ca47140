// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_lookup: table (pqa_rowmem, NS lanes), bias and output buffers (pqa_widemem, NOUT
// biases / outputs a cycle), as in pqa_top, with a load port and an output read port for the test; the idx[] write port (a group of NS
// subspaces per write) is driven by the test.

`default_nettype none

module tb_lookup #(
  parameter int LutW      = 8,
  parameter int AccW      = 32,
  parameter int CMax      = 32,
  parameter int NS        = 1,
  parameter int NOUT      = 1,
  parameter int LutBytes  = 16384,
  parameter int BiasWords = 32,
  parameter int OutBytes  = 4096
) (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        start_i,
  input  logic [7:0]  k_i,
  input  logic [7:0]  c_i,
  input  logic [15:0] m_i,
  input  logic [15:0] mult_i,
  input  logic [5:0]  shift_i,
  input  logic        relu_i,
  input  logic [3:0]  bits_i,
  input  logic [31:0] col_out_i,
  input  logic        idx_we_i,
  input  logic        idx_wbank_i,
  input  logic        idx_rbank_i,
  input  logic [7:0]  idx_group_i,  // subspaces g*NS .. g*NS+NS-1
  input  logic [NS*8-1:0] idx_wdata_i,
  input  logic        load_we_i,
  input  logic [1:0]  load_sel_i,    // 0: table, 1: bias, 2: output buffer (to clear it)
  input  logic [15:0] load_addr_i,   // word address
  input  logic [63:0] load_data_i,
  input  logic [15:0] out_raddr_i,   // word address, data one cycle later
  output logic [63:0] out_rdata_o,
  output logic        done_o
);

  localparam int LutAw     = $clog2(LutBytes / 8);
  localparam int LaneBytes = pqa_pkg::row_stride(NOUT * pqa_pkg::elem_bytes(LutW), 8);
  localparam int LutRows   = LutBytes / pqa_pkg::row_stride(NS * LaneBytes, 8);
  localparam int LutRowAw  = (LutRows > 1) ? $clog2(LutRows) : 1;
  localparam int BiasGroup = NOUT * 4;
  localparam int BiasPort  = (BiasGroup > 8) ? BiasGroup : 8;
  localparam int OutPort   = (NOUT > 8) ? NOUT : 8;

  logic [NS*LutRowAw-1:0]    lut_raddr;
  logic [NS*LaneBytes*8-1:0] lut_rdata;
  logic [31:0]          bias_roff, out_woff;
  logic [BiasPort*8-1:0] bias_rdata;
  logic [OutPort*8-1:0]  out_rline;
  logic [NOUT*8-1:0]    out_wdata;
  logic                 out_we;
  logic [NOUT-1:0]      out_wbe;

  pqa_rowmem #(.Bytes(LutBytes), .NS(NS), .LaneBytes(LaneBytes)) u_lut (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd0), .waddr_i(load_addr_i[LutAw-1:0]), .wdata_i(load_data_i),
    .raddr_i(lut_raddr), .rdata_o(lut_rdata)
  );
  pqa_widemem #(.Bytes(BiasWords * 8), .WideBytes(BiasGroup), .Align(BiasGroup & -BiasGroup)) u_bias (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd1), .woff_i({13'd0, load_addr_i, 3'd0}),
    .wdata_i((BiasPort*8)'(load_data_i)), .wbe_i(BiasPort'(8'hff)), .roff_i(bias_roff), .rdata_o(bias_rdata)
  );
  pqa_widemem #(.Bytes(OutBytes), .WideBytes(NOUT)) u_out (
    .clk_i(clk_i), .we_i(out_we || (load_we_i && load_sel_i == 2'd2)),
    .woff_i(out_we ? out_woff : {13'd0, load_addr_i, 3'd0}),
    .wdata_i(out_we ? (OutPort*8)'(out_wdata) : (OutPort*8)'(load_data_i)),
    .wbe_i(out_we ? OutPort'(out_wbe) : OutPort'(8'hff)),
    .roff_i({13'd0, out_raddr_i, 3'd0}), .rdata_o(out_rline)
  );
  assign out_rdata_o = out_rline[63:0];

  pqa_lookup #(
    .LutW(LutW), .AccW(AccW), .ActW(8), .CMax(CMax), .NS(NS), .NOUT(NOUT), .LaneBytes(LaneBytes),
    .LutRowAw(LutRowAw), .BiasBytes(BiasWords * 8), .OutBytes(OutBytes)
  ) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .k_i(k_i), .c_i(c_i), .m_i(m_i), .mult_i(mult_i),
    .shift_i(shift_i), .relu_i(relu_i), .unsigned_i(1'b0), .bits_i(bits_i), .col_out_i(col_out_i), .idx_we_i(idx_we_i),
    .idx_wbank_i(idx_wbank_i), .idx_rbank_i(idx_rbank_i),
    .idx_group_i(idx_group_i), .idx_wdata_i(idx_wdata_i), .lut_raddr_o(lut_raddr), .lut_rdata_i(lut_rdata),
    .bias_roff_o(bias_roff), .bias_rdata_i(bias_rdata[BiasGroup*8-1:0]), .out_we_o(out_we), .out_woff_o(out_woff),
    .out_wdata_o(out_wdata), .out_wbe_o(out_wbe), .done_o(done_o)
  );

  logic unused;
  assign unused = ^{load_addr_i, out_raddr_i, out_rline, bias_rdata};

endmodule

`default_nettype wire
