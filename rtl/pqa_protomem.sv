// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Prototype buffer: written a bus word at a time by `load` (and the clear sweep), read one prototype row
// per cycle by the encoder (docs/isa.md, "On-chip buffers"): a row is RowBytes = NS*NP*PL bytes and starts
// every Stride bytes (pqa_pkg::proto_row_stride: RowBytes rounded up to a power of two below a bus word,
// else to whole bus words).
//   Stride <= bus word: one bank of bus words, BusBytes / Stride rows per word; row r is slot r % RPW of
//     word r / RPW.
//   Stride > bus word: NB = Stride / BusBytes banks of bus words read in parallel at the same address; bus
//     word w of the buffer is word w / NB of bank w % NB, so row r is word r of every bank. The buffer
//     holds Rows = ProtoBytes / Stride whole rows.
// Both are pqa_rowmem with NB lanes of bus words (or one lane of a row) that all read the same row; reads
// are registered (one cycle), so that each bank maps onto block RAM.

`default_nettype none

module pqa_protomem #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int ProtoBytes   = 4096,
  parameter int RowBytes     = 1,
  // Derived, do not override (Icarus 11 rejects localparams in the parameter port list).
  parameter int BusBytes     = AxiDataWidth / 8,
  parameter int Stride       = pqa_pkg::row_stride(RowBytes, AxiDataWidth / 8),
  parameter int Rows         = ProtoBytes / Stride,
  parameter int WAw          = $clog2(ProtoBytes / (AxiDataWidth / 8)),
  parameter int RowAw        = (Rows > 1) ? $clog2(Rows) : 1
) (
  input  logic                    clk_i,
  input  logic                    we_i,
  input  logic [WAw-1:0]          waddr_i,   // bus word of the buffer
  input  logic [AxiDataWidth-1:0] wdata_i,
  input  logic [RowAw-1:0]        raddr_i,   // row
  output logic [RowBytes*8-1:0]   rdata_o
);

  // Banks of bus words (rows of whole bus words), or one bank of packed rows: pqa_rowmem with every lane at
  // the same row.
  localparam int NB        = (Stride > BusBytes) ? Stride / BusBytes : 1;
  localparam int LaneBytes = (Stride > BusBytes) ? BusBytes : Stride;

  logic [NB*LaneBytes*8-1:0] word;

  pqa_rowmem #(
    .AxiDataWidth(AxiDataWidth),
    .Bytes       (ProtoBytes),
    .NS          (NB),
    .LaneBytes   (LaneBytes)
  ) u_rows (
    .clk_i  (clk_i),
    .we_i   (we_i),
    .waddr_i(waddr_i),
    .wdata_i(wdata_i),
    .raddr_i({NB{raddr_i}}),
    .rdata_o(word)
  );

  assign rdata_o = word[RowBytes*8-1:0];

  // Bytes of a row's words past the row (Stride > RowBytes).
  logic unused_word;
  assign unused_word = ^word;

endmodule

`default_nettype wire
