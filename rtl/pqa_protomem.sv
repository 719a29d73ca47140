// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Prototype buffer: written a bus word at a time by `load` (and the clear sweep), read one prototype row
// per cycle by the encoder (docs/isa.md, "On-chip buffers"): a row is RowBytes = NS*NP*PL bytes and starts
// every Stride bytes (pqa_pkg::proto_row_stride: RowBytes rounded up to a power of two below a bus word,
// else to whole bus words).
//   Stride <= bus word: one bank of bus words, RPW = BusBytes / Stride rows per word; row r is slot r % RPW
//     of word r / RPW.
//   Stride > bus word: NB = Stride / BusBytes banks of bus words read in parallel; bus word w of the buffer
//     is word w / NB of bank w % NB, so row r is word r of every bank. The buffer holds Rows = ProtoBytes /
//     Stride whole rows; words past them (only the clear sweep reaches them) are dropped. Writes come in
//     order from word 0 (a `load` starts at buffer byte 0, the sweep at word 0), so the bank and its
//     address are counters: no divider.
// Reads are registered (one cycle), so that each bank maps onto block RAM.

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

  localparam int NB        = (Stride > BusBytes) ? Stride / BusBytes : 1;
  localparam int RPW       = (Stride < BusBytes) ? BusBytes / Stride : 1;
  localparam int BankWords = (NB > 1) ? Rows : ProtoBytes / BusBytes;
  localparam int BankAw    = (BankWords > 1) ? $clog2(BankWords) : 1;
  localparam int SlotW     = (RPW > 1) ? $clog2(RPW) : 1;

  logic [NB*AxiDataWidth-1:0] word;

  if (NB == 1) begin : gen_one_bank
    // Rows of at most a bus word: the bus-word memory of the narrow datapath, a row slot selected.
    logic [BankAw-1:0] rword;
    logic [SlotW-1:0]  slot_q;

    if (RPW > 1) begin : gen_slots
      assign rword = BankAw'(raddr_i >> SlotW);
      always_ff @(posedge clk_i) slot_q <= raddr_i[SlotW-1:0];
    end else begin : gen_no_slots
      assign rword  = BankAw'(raddr_i);
      assign slot_q = '0;
    end

    pqa_ram #(.Words(BankWords), .Width(AxiDataWidth)) u_bank (
      .clk_i  (clk_i),
      .we_i   (we_i),
      .waddr_i(BankAw'(waddr_i)),
      .wdata_i(wdata_i),
      .wbe_i  ({BusBytes{1'b1}}),
      .raddr_i(rword),
      .rdata_o(word)
    );

    assign rdata_o = word[32'(slot_q) * Stride * 8 +: RowBytes * 8];

    logic unused_slot;
    assign unused_slot = ^slot_q;
  end else begin : gen_banks
    // Rows of whole bus words, NB banks; the write position is a counter restarted by word 0.
    localparam int BankSelW = $clog2(NB);
    logic [BankSelW-1:0] wbank_q, wbank;
    logic [WAw-1:0]      waddr_q, wa;     // word within the bank (counts past BankWords: dropped)

    always_comb begin
      wbank = (waddr_i == '0) ? '0 : wbank_q;
      wa    = (waddr_i == '0) ? '0 : waddr_q;
    end

    always_ff @(posedge clk_i) begin
      if (we_i) begin
        if (32'(wbank) == NB - 1) begin
          wbank_q <= '0;
          waddr_q <= wa + WAw'(1);
        end else begin
          wbank_q <= wbank + BankSelW'(1);
          waddr_q <= wa;
        end
      end
    end

    for (genvar b = 0; b < NB; b++) begin : gen_bank
      pqa_ram #(.Words(BankWords), .Width(AxiDataWidth)) u_bank (
        .clk_i  (clk_i),
        .we_i   (we_i && 32'(wbank) == b && 32'(wa) < BankWords),
        .waddr_i(BankAw'(wa)),
        .wdata_i(wdata_i),
        .wbe_i  ({BusBytes{1'b1}}),
        .raddr_i(BankAw'(raddr_i)),
        .rdata_o(word[b*AxiDataWidth +: AxiDataWidth])
      );
    end

    assign rdata_o = word[RowBytes*8-1:0];

`ifndef SYNTHESIS
    // Writes come in order from word 0 (see the header).
    logic [WAw:0] next_q;
    always @(posedge clk_i) begin
      if (we_i) begin
        assert (waddr_i == '0 || {1'b0, waddr_i} == next_q)
          else $fatal(1, "pqa_protomem: write at word %0d out of order (expected 0 or %0d)", waddr_i, next_q);
        next_q <= {1'b0, waddr_i} + (WAw + 1)'(1);
      end
    end
`endif
  end

  // Bytes of a word past the row (Stride > RowBytes), and row addresses past the buffer (kept in range by
  // the controller's limit check).
  logic unused_word;
  assign unused_word = ^word;

endmodule

`default_nettype wire
