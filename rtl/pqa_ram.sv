// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Simple dual-port word memory: one write port with byte enables, one read port with a registered
// (one-cycle) read, so that it maps onto block RAM. The array itself has no reset.

`default_nettype none

module pqa_ram #(
  parameter int Words = 512,
  parameter int Width = 64,
  // Derived, do not override (Icarus 11 rejects localparams in the parameter port list).
  parameter int Aw = (Words > 1) ? $clog2(Words) : 1
) (
  input  logic               clk_i,
  input  logic               we_i,
  input  logic [Aw-1:0]      waddr_i,
  input  logic [Width-1:0]   wdata_i,
  input  logic [Width/8-1:0] wbe_i,
  input  logic [Aw-1:0]      raddr_i,
  output logic [Width-1:0]   rdata_o
);

  logic [Width-1:0] mem_q [Words];

  always_ff @(posedge clk_i) begin
    if (we_i) begin
      for (int b = 0; b < Width / 8; b++) begin
        if (wbe_i[b]) begin
          mem_q[waddr_i][b*8 +: 8] <= wdata_i[b*8 +: 8];
        end
      end
    end
    rdata_o <= mem_q[raddr_i];
  end

`ifndef SYNTHESIS
  // No write beyond the buffer (Words need not be a power of two).
  always @(posedge clk_i) begin
    if (we_i) begin
      assert ({1'b0, waddr_i} < (Aw + 1)'(Words)) else $fatal(1, "pqa_ram: write at word %0d of %0d", waddr_i, Words);
    end
  end
`endif

endmodule

`default_nettype wire
