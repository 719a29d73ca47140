// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Banked row memory, the table buffer and (through pqa_protomem) the prototype buffer: written a bus word at a
// time by `load` (and the clear sweep), read in NS lanes, each at its own row in the same cycle (docs/isa.md,
// "On-chip buffers"). A row holds NS lane words of LaneBytes (the table: NOUT entries, rounded by
// pqa_pkg::row_stride; the prototypes: bus words of a row, all lanes at the same row) and starts every
// Stride = row_stride(NS * LaneBytes) bytes; lane s of every row lives in bank s.
//   Stride <= bus word: a bus word holds RPL = BusBytes / Stride whole rows; bank s's word w holds lane s of
//     rows w*RPL .. w*RPL+RPL-1 (all banks are written by every beat); a read selects the row's slot.
//   Stride > bus word: a row is WPR = Stride / BusBytes bus words; the buffer holds Rows = Bytes / Stride
//     whole rows (words past them, only the clear sweep reaches them, are dropped). A bus word holds LPW =
//     BusBytes / LaneBytes whole lane words, or part WPL = LaneBytes / BusBytes of one; bank s's word r is
//     lane s of row r. Writes come in order from word 0 (a `load` starts at buffer byte 0, the sweep at word
//     0), so the row, the first lane of the word and the part are counters: no divider.
// Reads are registered (one cycle), so that each bank maps onto block RAM.

`default_nettype none

module pqa_rowmem #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int Bytes        = 16384,
  parameter int NS           = 1,
  parameter int LaneBytes    = 1,
  // Derived, do not override (Icarus 11 rejects localparams in the parameter port list).
  parameter int BusBytes     = AxiDataWidth / 8,
  parameter int Stride       = pqa_pkg::row_stride(NS * LaneBytes, AxiDataWidth / 8),
  parameter int Rows         = Bytes / Stride,
  parameter int WAw          = $clog2(Bytes / (AxiDataWidth / 8)),
  parameter int RowAw        = (Rows > 1) ? $clog2(Rows) : 1
) (
  input  logic                      clk_i,
  input  logic                      we_i,
  input  logic [WAw-1:0]            waddr_i,   // bus word of the buffer
  input  logic [AxiDataWidth-1:0]   wdata_i,
  input  logic [NS*RowAw-1:0]       raddr_i,   // lane s: its row
  output logic [NS*LaneBytes*8-1:0] rdata_o    // lane s: its lane word of that row
);

  localparam int RPL       = (Stride < BusBytes) ? BusBytes / Stride : 1;        // rows per bus word
  localparam int WPR       = (Stride > BusBytes) ? Stride / BusBytes : 1;        // bus words per row
  localparam int LPW       = (LaneBytes < BusBytes) ? BusBytes / LaneBytes : 1;  // lane words per bus word
  localparam int WPL       = (LaneBytes > BusBytes) ? LaneBytes / BusBytes : 1;  // bus words per lane word
  localparam int BankBytes = LaneBytes * RPL;
  localparam int BankWords = (RPL > 1) ? Bytes / BusBytes : Rows;
  localparam int BankAw    = (BankWords > 1) ? $clog2(BankWords) : 1;
  localparam int SlotW     = (RPL > 1) ? $clog2(RPL) : 1;
  localparam int CntW      = 32;

  // Write position (Stride > bus word): row, bus word within the row, first lane of the word, part of it.
  logic [CntW-1:0] row_q, wr_q, lane0_q, part_q;
  logic [CntW-1:0] row, wr, lane0, part;

  always_comb begin
    if (waddr_i == '0) begin
      row   = '0;
      wr    = '0;
      lane0 = '0;
      part  = '0;
    end else begin
      row   = row_q;
      wr    = wr_q;
      lane0 = lane0_q;
      part  = part_q;
    end
  end

  always_ff @(posedge clk_i) begin
    if (we_i) begin
      if (wr == WPR - 1) begin
        row_q   <= row + 1;
        wr_q    <= '0;
        lane0_q <= '0;
        part_q  <= '0;
      end else begin
        row_q <= row;
        wr_q  <= wr + 1;
        if (part == WPL - 1) begin
          part_q  <= '0;
          lane0_q <= lane0 + LPW;
        end else begin
          part_q  <= part + 1;
          lane0_q <= lane0;
        end
      end
    end
  end

  for (genvar s = 0; s < NS; s++) begin : gen_lane
    logic                   we;
    logic [BankAw-1:0]      waddr, raddr;
    logic [BankBytes*8-1:0] wdata, rword;
    logic [BankBytes-1:0]   wbe;
    logic [SlotW-1:0]       slot_q;
    logic [RowAw-1:0]       r;

    assign r = raddr_i[s*RowAw +: RowAw];

    if (RPL > 1 || Stride == BusBytes) begin : gen_packed
      // Whole rows per bus word: lane s of each of its RPL rows.
      always_comb begin
        for (int j = 0; j < RPL; j++) begin
          wdata[j*LaneBytes*8 +: LaneBytes*8] = wdata_i[(j*Stride + s*LaneBytes)*8 +: LaneBytes*8];
        end
      end
      assign we    = we_i;
      assign waddr = BankAw'(waddr_i);
      assign wbe   = '1;
    end else if (WPL > 1) begin : gen_parts
      // Lane words of several bus words: this one is part `part` of lane lane0.
      assign wdata = {WPL{wdata_i}};
      assign we    = we_i && lane0 == s && row < Rows;
      assign waddr = BankAw'(row);
      assign wbe   = BankBytes'({BusBytes{1'b1}}) << (part * BusBytes);
    end else begin : gen_lanes
      // Several lane words per bus word: this lane's is slot s % LPW when the word starts at its group.
      assign wdata = wdata_i[(s % LPW)*LaneBytes*8 +: LaneBytes*8];
      assign we    = we_i && lane0 == (s / LPW) * LPW && row < Rows;
      assign waddr = BankAw'(row);
      assign wbe   = '1;
    end

    if (RPL > 1) begin : gen_slots
      assign raddr = BankAw'(r >> SlotW);
      always_ff @(posedge clk_i) slot_q <= r[SlotW-1:0];
    end else begin : gen_no_slots
      assign raddr  = BankAw'(r);
      assign slot_q = '0;
    end

    pqa_ram #(.Words(BankWords), .Width(BankBytes * 8)) u_bank (
      .clk_i  (clk_i),
      .we_i   (we),
      .waddr_i(waddr),
      .wdata_i(wdata),
      .wbe_i  (wbe),
      .raddr_i(raddr),
      .rdata_o(rword)
    );

    assign rdata_o[s*LaneBytes*8 +: LaneBytes*8] = rword[32'(slot_q)*LaneBytes*8 +: LaneBytes*8];

    logic unused_lane;
    assign unused_lane = ^{slot_q, rword};
  end

  // Bits of the write counters beyond the banks; unused in the packed layout.
  logic unused;
  assign unused = ^{row_q, wr_q, lane0_q, part_q, row, wr, lane0, part};

`ifndef SYNTHESIS
  // Writes come in order from word 0 (see the header).
  logic [WAw:0] next_q;
  always @(posedge clk_i) begin
    if (we_i) begin
      assert (waddr_i == '0 || {1'b0, waddr_i} == next_q)
        else $fatal(1, "pqa_rowmem: write at word %0d out of order (expected 0 or %0d)", waddr_i, next_q);
      next_q <= {1'b0, waddr_i} + (WAw + 1)'(1);
    end
  end
`endif

endmodule

`default_nettype wire
