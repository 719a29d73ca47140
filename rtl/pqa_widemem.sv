// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Wide byte memory: a buffer of Bytes bytes with one write port and one read port, each moving up to
// PortBytes = max(WideBytes, bus word) contiguous bytes at any byte offset that is a multiple of Align, in
// one cycle. The output buffer (the look-up unit writes NOUT outputs a cycle) and the bias buffer (it reads
// NOUT biases a cycle) are built on it; bus-word users (`load`, `store`, the clear sweep, the vector unit)
// use the same ports at word-aligned offsets with the low bus word of the data.
//
// Banks: NB bus-word banks (pqa_ram, so that each maps onto block RAM), bus word w in bank w % NB at word
// w / NB; NB is the power of two that covers the bus words one access can touch, so every bank is read or
// written at most once per access. A line is the NB banks side by side (LineBytes = NB bus words); an
// access at offset o starts at byte o % LineBytes of it: the write data are rotated left by that many bytes
// on the way in, the read data right on the way out (the read's rotation registered with the read, which
// is registered: one cycle, as pqa_ram). Banks below the first bank of the access take the next word row.
// With NB = 1 (WideBytes = 1) this is one pqa_ram with a byte-select-free read of the whole word.

`default_nettype none

module pqa_widemem #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int OffW         = 32,  // bits of the byte offsets (those above the buffer are ignored)
  parameter int Bytes        = 4096,
  parameter int WideBytes    = 1,   // bytes of a wide access
  parameter int Align        = 1,   // wide accesses start at multiples of Align bytes (a power of two)
  // Derived, do not override (Icarus 11 rejects localparams in the parameter port list).
  parameter int BusBytes     = AxiDataWidth / 8,
  parameter int PortBytes    = (WideBytes > BusBytes) ? WideBytes : BusBytes,
  parameter int Skew         = BusBytes - ((Align < BusBytes) ? Align : BusBytes),  // bytes before the start
  parameter int NB           = 1 << $clog2((WideBytes + Skew + BusBytes - 1) / BusBytes),
  parameter int LineBytes    = NB * BusBytes,
  parameter int OffAw        = $clog2(((Bytes + LineBytes - 1) / LineBytes) * LineBytes)
) (
  input  logic                   clk_i,
  input  logic                   we_i,
  input  logic [OffW-1:0]        woff_i,   // byte offset of data byte 0
  input  logic [PortBytes*8-1:0] wdata_i,
  input  logic [PortBytes-1:0]   wbe_i,    // bytes to write
  input  logic [OffW-1:0]        roff_i,   // byte offset of data byte 0
  output logic [PortBytes*8-1:0] rdata_o   // the PortBytes bytes from roff_i (one cycle later)
);

  localparam int BankWords = (Bytes + LineBytes - 1) / LineBytes;
  localparam int BankAw    = (BankWords > 1) ? $clog2(BankWords) : 1;
  localparam int LineAw    = (LineBytes > 1) ? $clog2(LineBytes) : 1;   // byte within a line
  localparam int BusAlign  = $clog2(BusBytes);
  localparam int NbW       = (NB > 1) ? $clog2(NB) : 1;
  localparam int LineBits  = LineBytes * 8;

  logic [OffAw-1:0] woff, roff;
  assign woff = woff_i[OffAw-1:0];
  assign roff = roff_i[OffAw-1:0];

  // The word row of bank b for an access at offset off: the access's row, or the next one for the banks
  // below its first bank.
  function automatic logic [BankAw-1:0] bank_row(input logic [OffAw-1:0] off, input int b);
    logic [OffAw-1:0] row;
    logic [NbW-1:0]   first;
    row   = off >> (BusAlign + $clog2(NB));
    first = (NB > 1) ? NbW'(off >> BusAlign) : '0;
    if (NB > 1 && 32'(first) > b) begin
      row = row + OffAw'(1);
    end
    bank_row = BankAw'(row);
  endfunction

  logic [LineAw-1:0]   wrot, rrot, rrot_q;
  logic [LineBits-1:0] wline, wline_rot, rline, rline_rot;
  logic [LineBytes-1:0] wbe_line, wbe_rot;
  logic [2*LineBits-1:0]  wdbl, rdbl;
  logic [2*LineBytes-1:0] bedbl;

  assign wrot = LineAw'(woff);
  assign rrot = LineAw'(roff);

  // Write: rotate left by the start within the line (the upper half of the doubled, shifted vector).
  always_comb begin
    wline     = LineBits'(wdata_i);
    wbe_line  = LineBytes'(wbe_i);
    wdbl      = {wline, wline} << (32'(wrot) * 8);
    bedbl     = {wbe_line, wbe_line} << 32'(wrot);
    wline_rot = wdbl[2*LineBits-1 -: LineBits];
    wbe_rot   = bedbl[2*LineBytes-1 -: LineBytes];
  end

  for (genvar b = 0; b < NB; b++) begin : gen_bank
    pqa_ram #(.Words(BankWords), .Width(AxiDataWidth)) u_bank (
      .clk_i  (clk_i),
      .we_i   (we_i && (wbe_rot[b*BusBytes +: BusBytes] != '0)),
      .waddr_i(bank_row(woff, b)),
      .wdata_i(wline_rot[b*AxiDataWidth +: AxiDataWidth]),
      .wbe_i  (wbe_rot[b*BusBytes +: BusBytes]),
      .raddr_i(bank_row(roff, b)),
      .rdata_o(rline[b*AxiDataWidth +: AxiDataWidth])
    );
  end

  always_ff @(posedge clk_i) begin
    rrot_q <= rrot;
  end

  // Read: rotate right by the registered start (the lower half of the doubled, shifted vector).
  always_comb begin
    rdbl      = {rline, rline} >> (32'(rrot_q) * 8);
    rline_rot = rdbl[LineBits-1:0];
  end
  assign rdata_o = rline_rot[PortBytes*8-1:0];

  // Offset bits above the buffer; line bytes past the port.
  logic unused;
  assign unused = ^{woff_i, roff_i, rline_rot, wdbl, rdbl, bedbl};

`ifndef SYNTHESIS
  // Wide writes start at multiples of Align (bus words at word offsets); no write beyond the buffer.
  always @(posedge clk_i) begin
    if (we_i) begin
      // a wide write at a multiple of Align, or a bus-word write at a word offset
      assert (32'(woff_i) % Align == 0 || (32'(woff_i) % BusBytes == 0 && (wbe_i >> BusBytes) == '0))
        else $fatal(1, "pqa_widemem: write at byte %0d, not a multiple of %0d", woff_i, Align);
      for (int i = 0; i < PortBytes; i++) begin
        if (wbe_i[i]) begin
          assert (32'(woff_i) + i < Bytes) else $fatal(1, "pqa_widemem: write of byte %0d of %0d", 32'(woff_i) + i, Bytes);
        end
      end
    end
  end
`endif

endmodule

`default_nettype wire
