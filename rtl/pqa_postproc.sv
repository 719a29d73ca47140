// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Requantization (combinational), bit-exact with pqcompile.sim.requantize:
//   y = clamp((acc * mult + (shift > 0 ? 2^(shift-1) : 0)) >>> shift)
// clamped to the signed bits_i-bit range [-2^(bits-1), 2^(bits-1)-1] (2 <= bits_i <= ActW, checked by
// the controller), to [0, 2^(bits-1)-1] with relu_i, or to the unsigned range [0, 2^bits-1] with
// unsigned_i (bits_i < ActW, checked by the controller; relu_i is then irrelevant), and stored in ActW
// bits (sign-extended, or zero-extended for unsigned outputs).
// The product is formed at AccW + 32 bits, wide enough for a QuantMultW = 16-bit unsigned multiplier, the
// rounding term (shift <= pqa_pkg::QuantShiftLimit, checked by the controller) and the sign, so nothing
// overflows before the clamp.

`default_nettype none

module pqa_postproc #(
  parameter int AccW = 32,
  parameter int ActW = 8
) (
  input  logic [AccW-1:0]                 acc_i,
  input  logic [pqa_pkg::QuantMultW-1:0]  mult_i,
  input  logic [pqa_pkg::QuantShiftW-1:0] shift_i,
  input  logic                            relu_i,
  input  logic                            unsigned_i,
  input  logic [pqa_pkg::QuantBitsW-1:0]  bits_i,
  output logic [ActW-1:0]                 y_o
);

  localparam int PW = AccW + 32;

  logic signed [PW-1:0] acc_x, mult_x, prod, rnd, sum, shifted, hi, lo, clamped;

  always_comb begin
    acc_x  = {{(PW - AccW){acc_i[AccW-1]}}, acc_i};
    mult_x = {{(PW - pqa_pkg::QuantMultW){1'b0}}, mult_i};
    prod   = acc_x * mult_x;
    rnd    = '0;
`ifndef PQA_MUTANT_TRUNC
    if (shift_i != '0) begin
      rnd[shift_i - pqa_pkg::QuantShiftW'(1)] = 1'b1;
    end
`endif  // PQA_MUTANT_TRUNC (deliberate bug): no rounding term, the shift truncates
    sum     = prod + rnd;
    shifted = sum >>> shift_i;
    // 2^bits - 1 (unsigned) or 2^(bits-1) - 1; low end 0 (unsigned, ReLU) or -2^(bits-1).
    hi      = {{(PW - 1){1'b0}}, 1'b1} << (unsigned_i ? bits_i : bits_i - pqa_pkg::QuantBitsW'(1));
    hi      = hi - 1;
    lo      = (relu_i || unsigned_i) ? '0 : ~hi;
    if (shifted > hi) begin
      clamped = hi;
    end else if (shifted < lo) begin
      clamped = lo;
    end else begin
      clamped = shifted;
    end
    y_o = clamped[ActW-1:0];
  end

  // The clamp leaves only the low ActW bits significant.
  logic unused_clamped;
  assign unused_clamped = ^clamped;

endmodule

`default_nettype wire
