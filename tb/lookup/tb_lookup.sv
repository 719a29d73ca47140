// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_lookup: table (pqa_rowmem, NS lanes), bias and output buffers (pqa_ram), as in
// pqa_top, with a load port and an output read port for the test; the idx[] write port (a group of NS
// subspaces per write) is driven by the test.

`default_nettype none

module tb_lookup #(
  parameter int LutW      = 8,
  parameter int AccW      = 32,
  parameter int CMax      = 32,
  parameter int NS        = 1,
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
  localparam int BiasAw    = (BiasWords > 1) ? $clog2(BiasWords) : 1;
  localparam int OutAw     = $clog2(OutBytes / 8);
  localparam int LaneBytes = pqa_pkg::row_stride(pqa_pkg::elem_bytes(LutW), 8);  // NOUT = 1
  localparam int LutRows   = LutBytes / pqa_pkg::row_stride(NS * LaneBytes, 8);
  localparam int LutRowAw  = (LutRows > 1) ? $clog2(LutRows) : 1;

  logic [NS*LutRowAw-1:0]    lut_raddr;
  logic [NS*LaneBytes*8-1:0] lut_rdata;
  logic [BiasAw-1:0] bias_raddr;
  logic [63:0]       bias_rdata, out_wdata;
  logic              out_we;
  logic [OutAw-1:0]  out_waddr;
  logic [7:0]        out_wbe;

  pqa_rowmem #(.Bytes(LutBytes), .NS(NS), .LaneBytes(LaneBytes)) u_lut (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd0), .waddr_i(load_addr_i[LutAw-1:0]), .wdata_i(load_data_i),
    .raddr_i(lut_raddr), .rdata_o(lut_rdata)
  );
  pqa_ram #(.Words(BiasWords)) u_bias (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd1), .waddr_i(load_addr_i[BiasAw-1:0]), .wdata_i(load_data_i),
    .wbe_i(8'hff), .raddr_i(bias_raddr), .rdata_o(bias_rdata)
  );
  pqa_ram #(.Words(OutBytes / 8)) u_out (
    .clk_i(clk_i), .we_i(out_we || (load_we_i && load_sel_i == 2'd2)),
    .waddr_i(out_we ? out_waddr : load_addr_i[OutAw-1:0]), .wdata_i(out_we ? out_wdata : load_data_i),
    .wbe_i(out_we ? out_wbe : 8'hff),
    .raddr_i(out_raddr_i[OutAw-1:0]), .rdata_o(out_rdata_o)
  );

  pqa_lookup #(
    .LutW(LutW), .AccW(AccW), .ActW(8), .CMax(CMax), .NS(NS), .LaneBytes(LaneBytes), .LutRowAw(LutRowAw),
    .BiasWords(BiasWords), .OutBytes(OutBytes)
  ) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .k_i(k_i), .c_i(c_i), .m_i(m_i), .mult_i(mult_i),
    .shift_i(shift_i), .relu_i(relu_i), .unsigned_i(1'b0), .bits_i(bits_i), .col_out_i(col_out_i), .idx_we_i(idx_we_i),
    .idx_group_i(idx_group_i), .idx_wdata_i(idx_wdata_i), .lut_raddr_o(lut_raddr), .lut_rdata_i(lut_rdata),
    .bias_raddr_o(bias_raddr), .bias_rdata_i(bias_rdata), .out_we_o(out_we), .out_waddr_o(out_waddr),
    .out_wdata_o(out_wdata), .out_wbe_o(out_wbe), .done_o(done_o)
  );

  logic unused;
  assign unused = ^{load_addr_i, out_raddr_i};

endmodule

`default_nettype wire
