// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Vector unit: the `pool` and `add` instructions (docs/isa.md), VL act elements per cycle (VL lanes, as wide
// as the act and output buffers' ports: pqa_widemem reads and writes VL contiguous bytes at any offset).
//   pool (op_add_i = 0): for each channel ci < ch, acc = sum over the h*w pixels p of act byte p*ch + ci,
//     requantized with quant's mult / shift / relu / unsigned / bits and written to output byte ci.
//     Stage 0 walks channel groups cg (channels cg*VL .. cg*VL+VL-1) and pixels p with the address
//     p*ch + cg*VL as a running counter (+ch per pixel, the next group's first channel after the last
//     pixel); stage 1 accumulates the VL lanes; stage 2 requantizes them and writes the group's bytes.
//   add (op_add_i = 1): for i < n, out[i] = round_shift_clamp(act[i]*ma + out[i]*mb) (quant's mult is
//     not used). Stage 0 reads act bytes i .. i+VL-1 and the same output bytes; stage 1 forms the VL sums;
//     stage 2 writes them. Each output byte is read (stage 0) before it is written (stage 2, two cycles
//     later), and every element is a different byte, so the in-place update has no hazard.
// Lanes past ch (pool) or n (add) are computed from whatever the buffers hold and not written.
// Cycles from the start cycle to done: h*w*ceil(ch/VL) + 3 (pool), ceil(n/VL) + 3 (add).
// The accumulator is AccW = max(26, log2(ActBytes) + 9) bits: wide enough for the sum of a whole act
// buffer of int8 values and for act*ma + out*mb (8-bit x 16-bit, twice), so nothing wraps.

`default_nettype none

module pqa_vec #(
  parameter int ActW     = 8,
  parameter int ActBytes = 4096,
  parameter int OutBytes = 4096,
  parameter int VL       = 8,   // lanes (elements per cycle)
  parameter int OffW     = 32   // byte offsets in the act / output buffers
) (
  input  logic                            clk_i,
  input  logic                            rst_ni,
  input  logic                            start_i,
  input  logic                            op_add_i,  // 0: pool, 1: add
  // pool: fmap shape (checked by pqa_ctrl: h*w*ch <= ActBytes, ch <= OutBytes)
  input  logic [pqa_pkg::FmapHW-1:0]      fmap_h_i,
  input  logic [pqa_pkg::FmapWW-1:0]      fmap_w_i,
  input  logic [pqa_pkg::FmapChW-1:0]     fmap_ch_i,
  // add: element count (1..min(ActBytes, OutBytes), checked by pqa_ctrl) and multipliers
  input  logic [pqa_pkg::AddNW-1:0]       n_i,
  input  logic [pqa_pkg::AddMaW-1:0]      ma_i,
  input  logic [pqa_pkg::AddMbW-1:0]      mb_i,
  // quant state
  input  logic [pqa_pkg::QuantMultW-1:0]  mult_i,
  input  logic [pqa_pkg::QuantShiftW-1:0] shift_i,
  input  logic                            relu_i,
  input  logic                            unsigned_i,
  input  logic [pqa_pkg::QuantBitsW-1:0]  bits_i,
  // act buffer read port, output buffer read and write ports (pqa_widemem): VL bytes at a byte offset
  output logic [OffW-1:0]                 act_roff_o,
  input  logic [VL*ActW-1:0]              act_rdata_i,
  output logic [OffW-1:0]                 out_roff_o,
  input  logic [VL*ActW-1:0]              out_rdata_i,
  output logic                            out_we_o,
  output logic [OffW-1:0]                 out_woff_o,
  output logic [VL*ActW-1:0]              out_wdata_o,
  output logic [VL-1:0]                   out_wbe_o,
  output logic                            done_o
);

  localparam int AccW = ($clog2(ActBytes) + 9 > 26) ? $clog2(ActBytes) + 9 : 26;
  localparam int ChW  = pqa_pkg::FmapChW;
  localparam int NW   = pqa_pkg::AddNW;

  typedef enum logic [1:0] {
    VecIdle,
    VecIssue,
    VecDrain1,
    VecDrain2
  } vec_state_e;

  vec_state_e state_q, state_d;

  // Stage 0: pool walks (cg, p); add walks i in steps of VL. a_q is the act byte address of lane 0
  // (p*ch + cb, or i).
  localparam int HwW = pqa_pkg::FmapHW + pqa_pkg::FmapWW;  // h*w pixels

  logic            add_q;
  logic [HwW-1:0]  hw;
  logic [HwW-1:0]  p_q;
  logic [31:0]     a_q;
  logic [ChW:0]    cb_q;  // cg * VL
  logic [NW:0]     i_q;   // i
  logic            last_p, last_c, last_i, last;

  assign hw     = HwW'(fmap_h_i) * HwW'(fmap_w_i);
  assign last_p = (p_q == hw - HwW'(1));
  assign last_c = (cb_q + (ChW + 1)'(VL) >= {1'b0, fmap_ch_i});
  assign last_i = (i_q + (NW + 1)'(VL) >= {1'b0, n_i});
  assign last   = add_q ? last_i : (last_p && last_c);

  always_comb begin
    state_d = state_q;
    unique case (state_q)
      VecIdle:   if (start_i) state_d = VecIssue;
      VecIssue:  if (last) state_d = VecDrain1;
      VecDrain1: state_d = VecDrain2;
      VecDrain2: state_d = VecIdle;
      default:   state_d = VecIdle;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q <= VecIdle;
      add_q   <= 1'b0;
      p_q     <= '0;
      a_q     <= '0;
      cb_q    <= '0;
      i_q     <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == VecIdle) begin
        add_q <= op_add_i;
        p_q   <= '0;
        a_q   <= '0;
        cb_q  <= '0;
        i_q   <= '0;
      end else if (state_q == VecIssue) begin
        if (add_q) begin
          i_q <= i_q + (NW + 1)'(VL);
          a_q <= a_q + 32'(VL);
        end else if (!last_p) begin
          p_q <= p_q + HwW'(1);
          a_q <= a_q + 32'(fmap_ch_i);
        end else begin
          p_q  <= '0;
          cb_q <= cb_q + (ChW + 1)'(VL);
          a_q  <= 32'(cb_q) + 32'(VL);
        end
      end
    end
  end

  assign act_roff_o = OffW'(a_q);
  assign out_roff_o = OffW'(a_q);

  // Stage 1: pool accumulates each lane, add forms act*ma + out*mb per lane.
  logic                 v1_q, first1_q, last1_q;
  logic [ChW:0]         cb1_q;
  logic [31:0]          a1_q;
  logic [NW:0]          i1_q;
  logic [VL*AccW-1:0]   acc_q, acc_d, sum_d;
  logic [AccW-1:0]      xa_x, xb_x;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      cb1_q    <= '0;
      a1_q     <= '0;
      i1_q     <= '0;
    end else begin
      v1_q     <= (state_q == VecIssue);
      first1_q <= (p_q == '0);
      last1_q  <= add_q || last_p;
      cb1_q    <= cb_q;
      a1_q     <= a_q;
      i1_q     <= i_q;
    end
  end

  always_comb begin
    // Two's-complement arithmetic at AccW bits (operands sign-extended by hand): exact, as the results fit.
    xa_x = '0;
    xb_x = '0;
    for (int l = 0; l < VL; l++) begin
      xa_x = {{(AccW - 8){act_rdata_i[l*8 + 7]}}, act_rdata_i[l*8 +: 8]};
      xb_x = {{(AccW - 8){out_rdata_i[l*8 + 7]}}, out_rdata_i[l*8 +: 8]};
      acc_d[l*AccW +: AccW] = (first1_q ? '0 : acc_q[l*AccW +: AccW]) + xa_x;
      sum_d[l*AccW +: AccW] = xa_x * AccW'(ma_i) + xb_x * AccW'(mb_i);
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q <= '0;
    end else if (v1_q) begin
      acc_q <= acc_d;
    end
  end

  // Stage 2: requantize and write the lanes below ch / n (pool: bytes cb.. at the group's last pixel; add:
  // bytes i..).
  logic               v2_q;
  logic [VL*AccW-1:0] acc2_q;
  logic [31:0]        obyte2_q;
  logic [VL-1:0]      be2_q;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v2_q     <= 1'b0;
      acc2_q   <= '0;
      obyte2_q <= '0;
      be2_q    <= '0;
    end else begin
      v2_q <= v1_q && last1_q;
      if (v1_q && last1_q) begin
        acc2_q   <= add_q ? sum_d : acc_d;
        obyte2_q <= add_q ? a1_q : 32'(cb1_q);
        for (int l = 0; l < VL; l++) begin
          be2_q[l] <= add_q ? (i1_q + (NW + 1)'(l) < {1'b0, n_i}) : (cb1_q + (ChW + 1)'(l) < {1'b0, fmap_ch_i});
        end
      end
    end
  end

  for (genvar l = 0; l < VL; l++) begin : gen_post
    pqa_postproc #(
      .AccW(AccW),
      .ActW(ActW)
    ) u_postproc (
      .acc_i     (acc2_q[l*AccW +: AccW]),
      .mult_i    (add_q ? pqa_pkg::QuantMultW'(1) : mult_i),
      .shift_i   (shift_i),
      .relu_i    (relu_i),
      .unsigned_i(unsigned_i),
      .bits_i    (bits_i),
      .y_o       (out_wdata_o[l*ActW +: ActW])
    );
  end

  assign out_we_o   = v2_q;
  assign out_woff_o = OffW'(obyte2_q);
  assign out_wbe_o  = be2_q;
  assign done_o     = (state_q == VecDrain2);

  // High address bits beyond the buffers (kept in range by the controller's limit checks).
  logic unused;
  assign unused = ^{a_q, obyte2_q, a1_q};

`ifndef SYNTHESIS
  // Assertions: legal state; the walk stays inside the fmap / the n elements; no read or write of a lane
  // in use beyond the act / output buffers.
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q == VecIdle || state_q == VecIssue || state_q == VecDrain1 || state_q == VecDrain2)
        else $fatal(1, "pqa_vec: illegal state %0d", state_q);
      if (state_q == VecIssue) begin
        if (add_q) begin
          assert (i_q < (NW + 1)'(n_i) && 33'(a_q) < 33'(ActBytes) && 33'(a_q) < 33'(OutBytes)
                  && 64'(a_q) == 64'(i_q))
            else $fatal(1, "pqa_vec: add element %0d beyond n or the buffers", i_q);
        end else begin
          assert (p_q < hw && cb_q < (ChW + 1)'(fmap_ch_i)
                  && 64'(a_q) == 64'(p_q) * 64'(fmap_ch_i) + 64'(cb_q) && 33'(a_q) < 33'(ActBytes))
            else $fatal(1, "pqa_vec: pool walk p=%0d channel %0d at byte %0d", p_q, cb_q, a_q);
        end
      end
      if (out_we_o) begin
        assert (33'(obyte2_q) < 33'(OutBytes)) else $fatal(1, "pqa_vec: output write at byte %0d", obyte2_q);
      end
    end
  end
`endif

endmodule

`default_nettype wire
