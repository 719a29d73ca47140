// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Look-up and accumulate: for each output m of one column,
//   acc = bias[m] + sum_c lut[c][idx[c]][m]   (AccW-bit wrap-around)
// then requantize (pqa_postproc) and write the byte to the output buffer.
// Holds the idx[] register file that the encoder writes, NS subspaces (one group) at a time, in two banks:
// the encoder writes the next column into one (idx_wbank_i) while this unit reads the other (idx_rbank_i).
//
// NS subspace lanes x NOUT output lanes: stage 0 walks output groups mg (outputs mg*NOUT ..
// mg*NOUT+NOUT-1) and subspace groups g, and issues, for each lane s (subspace g*NS + s), the read of its
// table bank (pqa_rowmem) at row (g*k + idx[g*NS+s]) * ceil(m/NOUT) + mg (a lane word: the NOUT entries of
// the group's outputs), and the read of the group's NOUT biases (pqa_widemem); stage 1 sums, per output
// lane, the NS entries (lanes past c add 0) in an adder tree into its accumulator; stage 2 requantizes the
// NOUT accumulators (NOUT pqa_postproc) and writes the outputs below m as one NOUT-byte write.
// Cycles per column: ceil(m/NOUT) * ceil(c/NS) + 3 (issue, two drain cycles, done).
// Biases are BufBiasElemW = 32 bits; outputs ActW = 8-bit bytes; table entries are one or two bytes
// (LutW <= 16; pqa_top checks these).

`default_nettype none

module pqa_lookup #(
  parameter int OffW     = 32,  // byte offsets in the output buffer
  parameter int LutW     = 8,
  parameter int AccW     = 32,
  parameter int ActW     = 8,
  parameter int CMax     = 32,
  parameter int NS       = 1,   // subspace lanes (table banks read per cycle)
  parameter int NOUT     = 1,   // output lanes (outputs per cycle)
  parameter int LaneBytes = 1,  // bytes of a table lane word (pqa_rowmem): NOUT entries
  parameter int LutRowAw = 8,   // bits of a table row index (pqa_rowmem)
  parameter int BiasBytes = 128,
  parameter int OutBytes = 4096
) (
  input  logic                            clk_i,
  input  logic                            rst_ni,
  input  logic                            start_i,
  input  logic [pqa_pkg::ShapeKW-1:0]     k_i,
  input  logic [pqa_pkg::ShapeCW-1:0]     c_i,
  input  logic [pqa_pkg::ShapeMW-1:0]     m_i,
  input  logic [pqa_pkg::QuantMultW-1:0]  mult_i,
  input  logic [pqa_pkg::QuantShiftW-1:0] shift_i,
  input  logic                            relu_i,
  input  logic                            unsigned_i,  // unsigned clamp (bits_i < ActW, checked by pqa_ctrl)
  input  logic [pqa_pkg::QuantBitsW-1:0]  bits_i,      // output activation width, 2..ActW (checked by pqa_ctrl)
  input  logic [OffW-1:0]                 col_out_i,   // byte offset of the column in the output buffer
  // idx[] write port (from the encoder): subspaces g*NS .. g*NS+NS-1 of group g
  input  logic                            idx_we_i,
  input  logic                            idx_wbank_i,
  input  logic                            idx_rbank_i,
  input  logic [pqa_pkg::ShapeCW-1:0]     idx_group_i,
  input  logic [NS*pqa_pkg::ShapeKW-1:0]  idx_wdata_i,
  // table (NS lanes) and bias buffers
  output logic [NS*LutRowAw-1:0]          lut_raddr_o,
  input  logic [NS*LaneBytes*8-1:0]       lut_rdata_i,
  output logic [OffW-1:0]                 bias_roff_o,   // byte offset of the output group's biases
  input  logic [NOUT*pqa_pkg::BufBiasElemW-1:0] bias_rdata_i,  // its NOUT biases (pqa_widemem)
  // output buffer write port (pqa_widemem): NOUT bytes at a byte offset
  output logic                            out_we_o,
  output logic [OffW-1:0]                 out_woff_o,
  output logic [NOUT*ActW-1:0]            out_wdata_o,
  output logic [NOUT-1:0]                 out_wbe_o,
  output logic                            done_o
);

  localparam int KW        = pqa_pkg::ShapeKW;
  localparam int CW        = pqa_pkg::ShapeCW;
  localparam int MW        = pqa_pkg::ShapeMW;
  localparam int CPad      = (CMax + NS - 1) / NS * NS;   // idx[] entries: whole groups
  localparam int CAw       = (CPad > 1) ? $clog2(CPad) : 1;
  localparam int BiasW     = pqa_pkg::BufBiasElemW;  // bias width (docs/isa.md, "On-chip buffers")
  localparam int EB        = (LutW > 8) ? 2 : 1;      // bytes of a table entry
  localparam int RowW      = CW + KW + MW + 1;        // (g*k + idx) * ceil(m/NOUT) + mg < c*k*m

  typedef enum logic [1:0] {
    LkIdle,
    LkIssue,
    LkDrain1,
    LkDrain2
  } lk_state_e;

  lk_state_e state_q, state_d;

  logic [KW-1:0] idx_q [2*CPad];  // bank b, subspace ci at b*CPad + ci

  always_ff @(posedge clk_i) begin
    if (idx_we_i) begin
      for (int s = 0; s < NS; s++) begin
        idx_q[(idx_wbank_i ? CPad : 0) + 32'(CAw'(32'(idx_group_i) * NS + s))] <= idx_wdata_i[s*KW +: KW];
      end
    end
  end

  // The index of lane s in the group being looked up.
  function automatic logic [KW-1:0] idx_rd(input logic [CW:0] cb, input int s, input logic bank);
    idx_rd = idx_q[(bank ? CPad : 0) + 32'(CAw'(32'(cb) + s))];
  endfunction

  // Stage 0.
  logic [MW:0]     mb_q;     // mg * NOUT
  logic [MW-1:0]   mg_q;     // output group
  logic [MW-1:0]   mgn;      // ceil(m / NOUT) output groups
  logic [CW:0]     cb_q;     // g * NS
  logic [RowW-1:0] gk_q;     // g * k
  logic            last_g, last_m;

  assign mgn    = MW'(((MW + 1)'(m_i) + (MW + 1)'(NOUT - 1)) / (MW + 1)'(NOUT));
  assign last_g = (cb_q + (CW + 1)'(NS) >= {1'b0, c_i});
  assign last_m = (mb_q + (MW + 1)'(NOUT) >= {1'b0, m_i});

  logic [NS*RowW-1:0] rows;   // lane s: its table row
  always_comb begin
    for (int s = 0; s < NS; s++) begin
      rows[s*RowW +: RowW] = (gk_q + RowW'(idx_rd(cb_q, s, idx_rbank_i))) * RowW'(mgn) + RowW'(mg_q);
      lut_raddr_o[s*LutRowAw +: LutRowAw] = rows[s*RowW +: LutRowAw];
    end
  end
  assign bias_roff_o = OffW'(mb_q) << $clog2(BiasW / 8);

  always_comb begin
    state_d = state_q;
    unique case (state_q)
      LkIdle:   if (start_i) state_d = LkIssue;
      LkIssue:  if (last_g && last_m) state_d = LkDrain1;
      LkDrain1: state_d = LkDrain2;
      LkDrain2: state_d = LkIdle;
      default:  state_d = LkIdle;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q <= LkIdle;
      mb_q    <= '0;
      mg_q    <= '0;
      cb_q    <= '0;
      gk_q    <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == LkIdle) begin
        mb_q <= '0;
        mg_q <= '0;
        cb_q <= '0;
        gk_q <= '0;
      end else if (state_q == LkIssue) begin
        if (!last_g) begin
          cb_q <= cb_q + (CW + 1)'(NS);
          gk_q <= gk_q + RowW'(k_i);
        end else begin
          cb_q <= '0;
          gk_q <= '0;
          mb_q <= mb_q + (MW + 1)'(NOUT);
          mg_q <= mg_q + MW'(1);
        end
      end
    end
  end

  // Stage 1: extract the NS x NOUT table entries and the NOUT biases, sum, accumulate.
  logic                  v1_q, first1_q, last1_q;
  logic [NS-1:0]         lv1_q;    // lane s holds a subspace (g*NS + s < c)
  logic [MW:0]           mb1_q;
  logic [NOUT*AccW-1:0]  sum, bias, acc_q, acc_d;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      lv1_q    <= '0;
      mb1_q    <= '0;
    end else begin
      v1_q     <= (state_q == LkIssue);
      first1_q <= (cb_q == '0);
      last1_q  <= last_g;
      for (int s = 0; s < NS; s++) begin
        lv1_q[s] <= (cb_q + (CW + 1)'(s) < {1'b0, c_i});
      end
      mb1_q    <= mb_q;
    end
  end

  always_comb begin
    for (int o = 0; o < NOUT; o++) begin
      // output lane o: entry o of each lane word, sign-extended; lanes past c add 0
      sum[o*AccW +: AccW] = '0;
      for (int s = 0; s < NS; s++) begin
        if (lv1_q[s]) begin
          sum[o*AccW +: AccW] = sum[o*AccW +: AccW]
            + {{(AccW - LutW){lut_rdata_i[(s*LaneBytes + o*EB)*8 + LutW - 1]}},
               lut_rdata_i[(s*LaneBytes + o*EB)*8 +: LutW]};
        end
      end
      acc_d[o*AccW +: AccW] = (first1_q ? bias[o*AccW +: AccW] : acc_q[o*AccW +: AccW]) + sum[o*AccW +: AccW];
    end
  end

  // The biases, sign-extended (or truncated) to AccW.
  for (genvar o = 0; o < NOUT; o++) begin : gen_bias
    if (AccW >= BiasW) begin : gen_ext
      assign bias[o*AccW +: AccW] = {{(AccW - BiasW){bias_rdata_i[o*BiasW + BiasW - 1]}}, bias_rdata_i[o*BiasW +: BiasW]};
    end else begin : gen_trunc
      assign bias[o*AccW +: AccW] = bias_rdata_i[o*BiasW +: AccW];
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q <= '0;
    end else if (v1_q) begin
      acc_q <= acc_d;
    end
  end

  // Stage 2: requantize the NOUT accumulators and write the outputs below m.
  logic                 v2_q;
  logic [NOUT*AccW-1:0] acc2_q;
  logic [OffW-1:0]      obyte2_q;
  logic [NOUT-1:0]      ov2_q;   // output mb + o < m

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v2_q     <= 1'b0;
      acc2_q   <= '0;
      obyte2_q <= '0;
      ov2_q    <= '0;
    end else begin
      v2_q <= v1_q && last1_q;
      if (v1_q && last1_q) begin
        acc2_q   <= acc_d;
        obyte2_q <= col_out_i + OffW'(mb1_q);
        for (int o = 0; o < NOUT; o++) begin
          ov2_q[o] <= (mb1_q + (MW + 1)'(o) < {1'b0, m_i});
        end
      end
    end
  end

  for (genvar o = 0; o < NOUT; o++) begin : gen_post
    pqa_postproc #(
      .AccW(AccW),
      .ActW(ActW)
    ) u_postproc (
      .acc_i     (acc2_q[o*AccW +: AccW]),
      .mult_i    (mult_i),
      .shift_i   (shift_i),
      .relu_i    (relu_i),
      .unsigned_i(unsigned_i),
      .bits_i    (bits_i),
      .y_o       (out_wdata_o[o*ActW +: ActW])
    );
  end

  assign out_we_o   = v2_q;
  assign out_woff_o = obyte2_q;
  assign out_wbe_o  = ov2_q;
  assign done_o     = (state_q == LkDrain2);

  // Table bytes past the entries of a lane word; bias bits above AccW.
  logic unused;
  assign unused = ^{idx_group_i, lut_rdata_i, rows, bias_rdata_i};

`ifndef SYNTHESIS
  // Assertions: legal state, no index beyond CMax, no table / bias / output access beyond its buffer.
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q == LkIdle || state_q == LkIssue || state_q == LkDrain1 || state_q == LkDrain2)
        else $fatal(1, "pqa_lookup: illegal state %0d", state_q);
      if (idx_we_i) begin
        assert (32'(idx_group_i) * NS < CPad) else $fatal(1, "pqa_lookup: idx write of group %0d >= CMax", idx_group_i);
      end
      if (state_q == LkIssue) begin
        for (int s = 0; s < NS; s++) begin
          assert (32'(cb_q) + s >= 32'(c_i) || idx_rd(cb_q, s, idx_rbank_i) < k_i)
            else $fatal(1, "pqa_lookup: lane %0d: index %0d >= k", s, idx_rd(cb_q, s, idx_rbank_i));
        end
        assert ((OffW + 1)'(bias_roff_o) < (OffW + 1)'(BiasBytes))
          else $fatal(1, "pqa_lookup: bias read beyond the buffer (byte %0d)", bias_roff_o);
      end
      if (out_we_o) begin
        assert ((OffW + 1)'(obyte2_q) < (OffW + 1)'(OutBytes))
          else $fatal(1, "pqa_lookup: output write at byte %0d", obyte2_q);
      end
    end
  end
`endif

endmodule

`default_nettype wire
