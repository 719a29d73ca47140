// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Vector unit: the `pool` and `add` instructions (docs/isa.md), one act element per cycle.
//   pool (op_add_i = 0): for each channel ci < ch, acc = sum over the h*w pixels p of act byte p*ch + ci,
//     requantized with quant's mult / shift / relu / unsigned / bits and written to output byte ci.
//     Stage 0 walks (ci, p) with the address p*ch + ci as a running counter (+ch per pixel, ci+1 at the
//     next channel); stage 1 accumulates; stage 2 requantizes and writes the channel's byte.
//   add (op_add_i = 1): for i < n, out[i] = round_shift_clamp(act[i]*ma + out[i]*mb) (quant's mult is
//     not used). Stage 0 reads act byte i and output byte i; stage 1 forms the sum; stage 2 writes
//     byte i. Each output byte is read (stage 0) before it is written (stage 2, two cycles later), and
//     every element is a different byte, so the in-place update has no hazard.
// Cycles from the start cycle to done: h*w*ch + 3 (pool), n + 3 (add).
// The accumulator is AccW = max(26, log2(ActBytes) + 9) bits: wide enough for the sum of a whole act
// buffer of int8 values and for act*ma + out*mb (8-bit x 16-bit, twice), so nothing wraps.
// Buffers are read and written a bus word (AxiDataWidth bits) at a time; elements are bytes (int8).

`default_nettype none

module pqa_vec #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int ActW     = 8,
  parameter int ActBytes = 4096,
  parameter int OutBytes = 4096,
  // Derived, do not override.
  parameter int ActAw    = $clog2(ActBytes / (AxiDataWidth / 8)),
  parameter int OutAw    = $clog2(OutBytes / (AxiDataWidth / 8))
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
  // act buffer read port, output buffer read and write ports
  output logic [ActAw-1:0]                act_raddr_o,
  input  logic [AxiDataWidth-1:0]         act_rdata_i,
  output logic [OutAw-1:0]                out_raddr_o,
  input  logic [AxiDataWidth-1:0]         out_rdata_i,
  output logic                            out_we_o,
  output logic [OutAw-1:0]                out_waddr_o,
  output logic [AxiDataWidth-1:0]         out_wdata_o,
  output logic [AxiDataWidth/8-1:0]       out_wbe_o,
  output logic                            done_o
);

  localparam int AccW     = ($clog2(ActBytes) + 9 > 26) ? $clog2(ActBytes) + 9 : 26;
  localparam int BusBytes = AxiDataWidth / 8;
  localparam int BusAlign = $clog2(BusBytes);  // byte-offset bits within a bus word

  typedef enum logic [1:0] {
    VecIdle,
    VecIssue,
    VecDrain1,
    VecDrain2
  } vec_state_e;

  vec_state_e state_q, state_d;

  // Stage 0: pool walks (ci, p); add walks i. a_q is the act byte address (p*ch + ci, or i).
  localparam int HwW = pqa_pkg::FmapHW + pqa_pkg::FmapWW;  // h*w pixels

  logic                         add_q;
  logic [HwW-1:0]               hw;
  logic [HwW-1:0]               p_q;
  logic [31:0]                  a_q;
  logic [pqa_pkg::FmapChW-1:0]  ci_q;
  logic [pqa_pkg::AddNW-1:0]    i_q;
  logic                         last_p, last_c, last_i, last;

  assign hw     = HwW'(fmap_h_i) * HwW'(fmap_w_i);
  assign last_p = (p_q == hw - HwW'(1));
  assign last_c = (ci_q == fmap_ch_i - pqa_pkg::FmapChW'(1));
  assign last_i = (i_q == n_i - pqa_pkg::AddNW'(1));
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
      ci_q    <= '0;
      i_q     <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == VecIdle) begin
        add_q <= op_add_i;
        p_q   <= '0;
        a_q   <= '0;
        ci_q  <= '0;
        i_q   <= '0;
      end else if (state_q == VecIssue) begin
        i_q <= i_q + pqa_pkg::AddNW'(1);
        if (add_q) begin
          a_q <= a_q + 32'd1;
        end else if (!last_p) begin
          p_q <= p_q + HwW'(1);
          a_q <= a_q + 32'(fmap_ch_i);
        end else begin
          p_q  <= '0;
          ci_q <= ci_q + pqa_pkg::FmapChW'(1);
          a_q  <= 32'(ci_q) + 32'd1;
        end
      end
    end
  end

  assign act_raddr_o = a_q[ActAw+BusAlign-1:BusAlign];
  assign out_raddr_o = a_q[OutAw+BusAlign-1:BusAlign];

  // Stage 1: extract the bytes; pool accumulates, add forms act*ma + out*mb.
  logic                        v1_q, first1_q, last1_q;
  logic [BusAlign-1:0]         sel1_q;
  logic [pqa_pkg::FmapChW-1:0] ci1_q;
  logic [31:0]                 a1_q;
  logic [7:0]      xa, xb;
  logic [AccW-1:0] xa_x, xb_x, acc_q, acc_d, sum_d;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      sel1_q   <= '0;
      ci1_q    <= '0;
      a1_q     <= '0;
    end else begin
      v1_q     <= (state_q == VecIssue);
      first1_q <= (p_q == '0);
      last1_q  <= add_q || last_p;
      sel1_q   <= a_q[BusAlign-1:0];
      ci1_q    <= ci_q;
      a1_q     <= a_q;
    end
  end

  always_comb begin
    // Two's-complement arithmetic at AccW bits (operands sign- or zero-extended by hand): exact, as the
    // results fit.
    xa    = act_rdata_i[sel1_q*8 +: 8];
    xb    = out_rdata_i[sel1_q*8 +: 8];
    xa_x  = {{(AccW - 8){xa[7]}}, xa};
    xb_x  = {{(AccW - 8){xb[7]}}, xb};
    acc_d = (first1_q ? '0 : acc_q) + xa_x;
    sum_d = xa_x * AccW'(ma_i) + xb_x * AccW'(mb_i);
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q <= '0;
    end else if (v1_q) begin
      acc_q <= acc_d;
    end
  end

  // Stage 2: requantize and write one output byte (pool: byte ci at the channel's last pixel; add: byte i).
  logic            v2_q;
  logic [AccW-1:0] acc2_q;
  logic [31:0]     obyte2_q;
  logic [ActW-1:0] y;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v2_q     <= 1'b0;
      acc2_q   <= '0;
      obyte2_q <= '0;
    end else begin
      v2_q <= v1_q && last1_q;
      if (v1_q && last1_q) begin
        acc2_q   <= add_q ? sum_d : acc_d;
        obyte2_q <= add_q ? a1_q : 32'(ci1_q);
      end
    end
  end

  pqa_postproc #(
    .AccW(AccW),
    .ActW(ActW)
  ) u_postproc (
    .acc_i     (acc2_q),
    .mult_i    (add_q ? pqa_pkg::QuantMultW'(1) : mult_i),
    .shift_i   (shift_i),
    .relu_i    (relu_i),
    .unsigned_i(unsigned_i),
    .bits_i    (bits_i),
    .y_o       (y)
  );

  assign out_we_o    = v2_q;
  assign out_waddr_o = obyte2_q[OutAw+BusAlign-1:BusAlign];
  assign out_wdata_o = {(AxiDataWidth / ActW){y}};
  assign out_wbe_o   = BusBytes'(1) << obyte2_q[BusAlign-1:0];
  assign done_o      = (state_q == VecDrain2);

  // High address bits beyond the buffers (kept in range by the controller's limit checks).
  logic unused;
  assign unused = ^{a_q, obyte2_q, a1_q[31:BusAlign]};

`ifndef SYNTHESIS
  // Assertions: legal state; the walk stays inside the fmap / the n elements; no read or write beyond
  // the act / output buffers.
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q == VecIdle || state_q == VecIssue || state_q == VecDrain1 || state_q == VecDrain2)
        else $fatal(1, "pqa_vec: illegal state %0d", state_q);
      if (state_q == VecIssue) begin
        if (add_q) begin
          assert (i_q < n_i && 33'(a_q) < 33'(ActBytes) && 33'(a_q) < 33'(OutBytes))
            else $fatal(1, "pqa_vec: add element %0d beyond n or the buffers", i_q);
        end else begin
          assert (p_q < hw && ci_q < fmap_ch_i
                  && 64'(a_q) == 64'(p_q) * 64'(fmap_ch_i) + 64'(ci_q) && 33'(a_q) < 33'(ActBytes))
            else $fatal(1, "pqa_vec: pool walk p=%0d ci=%0d at byte %0d", p_q, ci_q, a_q);
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
