// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Look-up and accumulate: for each output m of each column of a run,
//   acc = bias[m] + sum_c lut[c][idx[c]][m]   (AccW-bit wrap-around)
// then requantize (pqa_postproc) and write the byte to the output buffer (column j at byte j*m).
// The encoder's indices arrive through an index queue of IdxDepth groups (NS indices of one subspace group
// each, in the order of the run: column by column, group by group); idx_credit_o tells the encoder that
// the queue takes one more group.
//
// NS subspace lanes x NOUT output lanes, streaming over the whole run: stage 0 walks, per column, subspace
// groups g (the queue's head) and, inside, output groups mg (outputs mg*NOUT .. mg*NOUT+NOUT-1), and issues,
// for each lane s (subspace g*NS + s), the read of its table bank (pqa_rowmem) at row
// (g*k + idx[g*NS+s]) * ceil(m/NOUT) + mg (a lane word: the NOUT entries of the group's outputs), and the
// read of the output group's NOUT biases (pqa_widemem); the head leaves the queue with its last output
// group. Stage 1 sums, per output lane, the NS entries (lanes past c add 0) in an adder tree onto the output
// group's accumulators (ceil(MMax/NOUT) sets of NOUT; the bias at g = 0); at the column's last group the
// sum goes on to stage 2 instead, which requantizes the NOUT values (NOUT pqa_postproc) and writes the
// outputs below m as one NOUT-byte write.
// Cycles: ceil(m/NOUT) per group, no cycle between groups or columns while the queue has a group (a group
// arriving at an empty queue is issued in the cycle it arrives); the last write comes two cycles after the
// last issue (done_o).
// Biases are BufBiasElemW = 32 bits; outputs ActW = 8-bit bytes; table entries are one or two bytes
// (LutW <= 16; pqa_top checks these). With pack_i (shape.pack, two-byte entries only: pqa_ctrl refuses it
// otherwise) the entries are bytes and table row r is half r % 2 of buffer row r / 2: each lane reads
// row r >> 1 and takes its NOUT bytes from byte (r % 2) * LaneBytes / 2 of the lane word.

`default_nettype none

module pqa_lookup #(
  parameter int OffW     = 32,  // byte offsets in the output buffer
  parameter int LutW     = 8,
  parameter int AccW     = 32,
  parameter int ActW     = 8,
  parameter int MMax     = 64,
  parameter int IdxDepth = 4,   // groups the index queue holds (docs/theory.md; sim.IDX_DEPTH)
  parameter int NS       = 1,   // subspace lanes (table banks read per cycle)
  parameter int NOUT     = 1,   // output lanes (outputs per cycle)
  parameter int LaneBytes = 1,  // bytes of a table lane word (pqa_rowmem): NOUT entries
  parameter int LutRowAw = 8,   // bits of a table row index (pqa_rowmem)
  parameter int BiasBytes = 128,
  parameter int OutBytes = 4096
) (
  input  logic                            clk_i,
  input  logic                            rst_ni,
  input  logic                            start_i,     // a run starts: n_i columns
  input  logic [pqa_pkg::RunNW-1:0]       n_i,
  input  logic [pqa_pkg::RunOstrideW-1:0] ostride_i,   // output bytes from column j to j+1 (0: m)
  input  logic [pqa_pkg::RunOoffW-1:0]    ooff_i,      // output byte of column 0
  input  logic                            hold_i,      // dst = none: no outputs, the accumulators held
  input  logic                            acc_i,       // column 0 starts from the held accumulators
  input  logic                            pack_i,      // byte entries, two table rows a buffer row (EB = 2)
  input  logic [pqa_pkg::ShapeKW-1:0]     k_i,
  input  logic [pqa_pkg::ShapeCW-1:0]     c_i,
  input  logic [pqa_pkg::ShapeMW-1:0]     m_i,
  input  logic [pqa_pkg::QuantMultW-1:0]  mult_i,
  input  logic [pqa_pkg::QuantShiftW-1:0] shift_i,
  input  logic                            relu_i,
  input  logic                            unsigned_i,  // unsigned clamp (bits_i < ActW, checked by pqa_ctrl)
  input  logic [pqa_pkg::QuantBitsW-1:0]  bits_i,      // output activation width, 2..ActW (checked by pqa_ctrl)
  // index queue (from the encoder): the next group's NS indices
  input  logic                            idx_we_i,
  input  logic [NS*pqa_pkg::ShapeKW-1:0]  idx_wdata_i,
  output logic                            idx_credit_o,
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
  output logic                            done_o       // the run's last write
);

  localparam int KW        = pqa_pkg::ShapeKW;
  localparam int CW        = pqa_pkg::ShapeCW;
  localparam int MW        = pqa_pkg::ShapeMW;
  localparam int BiasW     = pqa_pkg::BufBiasElemW;  // bias width (docs/isa.md, "On-chip buffers")
  localparam int EB        = (LutW > 8) ? 2 : 1;      // bytes of a table entry
  localparam int RowW      = CW + KW + MW + 1;        // (g*k + idx) * ceil(m/NOUT) + mg < c*k*m
  localparam int MgMax     = (MMax + NOUT - 1) / NOUT;  // output groups: accumulator sets
  localparam int MgAw      = (MgMax > 1) ? $clog2(MgMax) : 1;
  localparam int QAw       = (IdxDepth > 1) ? $clog2(IdxDepth) : 1;
  localparam int QCw       = $clog2(IdxDepth + 1);
  localparam int RunNW     = pqa_pkg::RunNW;

  // Index queue.
  logic [NS*KW-1:0] q_q [IdxDepth];
  logic [QAw-1:0]   qw_q, qr_q;
  logic [QCw-1:0]   qn_q;
  logic [NS*KW-1:0] head;
  logic             pop;

  // The head: the oldest queued group, or, with the queue empty, the group being written now (a bypass, so
  // that a group's first issue comes in the cycle its indices arrive).
  assign head         = (qn_q == '0) ? idx_wdata_i : q_q[qr_q];
  assign idx_credit_o = (32'(qn_q) + (idx_we_i ? 32'd1 : 32'd0) + 32'd1 <= IdxDepth);

  always_ff @(posedge clk_i) begin
    if (idx_we_i) begin
      q_q[qw_q] <= idx_wdata_i;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      qw_q <= '0;
      qr_q <= '0;
      qn_q <= '0;
    end else if (start_i) begin
      qw_q <= '0;
      qr_q <= '0;
      qn_q <= '0;
    end else begin
      if (idx_we_i) begin
        qw_q <= (32'(qw_q) == IdxDepth - 1) ? '0 : qw_q + QAw'(1);
      end
      if (pop) begin
        qr_q <= (32'(qr_q) == IdxDepth - 1) ? '0 : qr_q + QAw'(1);
      end
      qn_q <= qn_q + QCw'(idx_we_i) - QCw'(pop);
    end
  end

  // Stage 0.
  logic            run_q;    // the run has columns left
  logic [RunNW-1:0] j_q;     // column
  logic [OffW-1:0] lo_q;     // its first output byte: ooff + j * step
  logic [OffW-1:0] ostep;    // step: ostride, or m when it is 0
  logic [MW:0]     mb_q;     // mg * NOUT
  logic [MW-1:0]   mg_q;     // output group
  logic [MW-1:0]   mgn;      // ceil(m / NOUT) output groups
  logic [CW:0]     cb_q;     // g * NS
  logic [RowW-1:0] gk_q;     // g * k
  logic            issue, last_g, last_m, l_end;

  assign ostep  = (ostride_i == '0) ? OffW'(m_i) : OffW'(ostride_i);
  assign mgn    = MW'(((MW + 1)'(m_i) + (MW + 1)'(NOUT - 1)) / (MW + 1)'(NOUT));
  assign last_g = (cb_q + (CW + 1)'(NS) >= {1'b0, c_i});
  assign last_m = (mb_q + (MW + 1)'(NOUT) >= {1'b0, m_i});
  assign issue  = run_q && (qn_q != '0 || idx_we_i);
  assign pop    = issue && last_m;
  assign l_end  = issue && last_m && last_g && (j_q + RunNW'(1) == n_i);

  logic [NS*RowW-1:0] rows;   // lane s: its table row
  always_comb begin
    for (int s = 0; s < NS; s++) begin
      rows[s*RowW +: RowW] = (gk_q + RowW'(head[s*KW +: KW])) * RowW'(mgn) + RowW'(mg_q);
      lut_raddr_o[s*LutRowAw +: LutRowAw] = pack_i ? rows[s*RowW + 1 +: LutRowAw] : rows[s*RowW +: LutRowAw];
    end
  end
  assign bias_roff_o = OffW'(mb_q) << $clog2(BiasW / 8);

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      run_q <= 1'b0;
      j_q   <= '0;
      lo_q  <= '0;
      mb_q  <= '0;
      mg_q  <= '0;
      cb_q  <= '0;
      gk_q  <= '0;
    end else if (start_i) begin
      run_q <= 1'b1;
      j_q   <= '0;
      lo_q  <= OffW'(ooff_i);
      mb_q  <= '0;
      mg_q  <= '0;
      cb_q  <= '0;
      gk_q  <= '0;
    end else if (issue) begin
      if (!last_m) begin
        mb_q <= mb_q + (MW + 1)'(NOUT);
        mg_q <= mg_q + MW'(1);
      end else begin
        mb_q <= '0;
        mg_q <= '0;
        if (!last_g) begin
          cb_q <= cb_q + (CW + 1)'(NS);
          gk_q <= gk_q + RowW'(k_i);
        end else begin
          cb_q <= '0;
          gk_q <= '0;
          j_q  <= j_q + RunNW'(1);
          lo_q <= lo_q + ostep;
        end
      end
      if (l_end) begin
        run_q <= 1'b0;
      end
    end
  end

  // Stage 1: extract the NS x NOUT table entries and the NOUT biases, sum, accumulate.
  logic                  v1_q, first1_q, last1_q, end1_q;
  logic [NS-1:0]         lv1_q;    // lane s holds a subspace (g*NS + s < c)
  logic [NS-1:0]         hf1_q;    // lane s reads the upper half of its lane word (pack_i, odd row)
  logic [MW:0]           mb1_q;
  logic [MgAw-1:0]       mg1_q;
  logic [OffW-1:0]       lo1_q;
  logic [NOUT*AccW-1:0]  sum, bias, acc_d;
  logic [NOUT*AccW-1:0]  acc_q [MgMax];  // output group mg's NOUT accumulators

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      end1_q   <= 1'b0;
      lv1_q    <= '0;
      hf1_q    <= '0;
      mb1_q    <= '0;
      mg1_q    <= '0;
      lo1_q    <= '0;
    end else begin
      v1_q     <= issue;
      first1_q <= (cb_q == '0);
      last1_q  <= last_g;
      end1_q   <= l_end;
      for (int s = 0; s < NS; s++) begin
        lv1_q[s] <= (cb_q + (CW + 1)'(s) < {1'b0, c_i});
        hf1_q[s] <= pack_i && rows[s*RowW];
      end
      mb1_q    <= mb_q;
      mg1_q    <= MgAw'(mg_q);
      lo1_q    <= lo_q;
    end
  end

  // Entry o of lane s's lane word, sign-extended to AccW: LutW bits at byte o*EB, or with pack_i (two-byte
  // entries only) the byte o of the half that hf1_q selects.
  logic [NS*NOUT*AccW-1:0] ent;
  for (genvar s = 0; s < NS; s++) begin : gen_ent_lane
    for (genvar o = 0; o < NOUT; o++) begin : gen_ent
      logic [LutW-1:0] wide;
      assign wide = lut_rdata_i[(s*LaneBytes + o*EB)*8 +: LutW];
      if (EB > 1) begin : gen_pack
        logic [7:0] lo, hi, b;
        assign lo = lut_rdata_i[(s*LaneBytes + o)*8 +: 8];
        assign hi = lut_rdata_i[(s*LaneBytes + LaneBytes / 2 + o)*8 +: 8];
        assign b  = hf1_q[s] ? hi : lo;
        assign ent[(s*NOUT + o)*AccW +: AccW] = pack_i ? {{(AccW - 8){b[7]}}, b}
                                                       : {{(AccW - LutW){wide[LutW-1]}}, wide};
      end else begin : gen_byte
        assign ent[(s*NOUT + o)*AccW +: AccW] = {{(AccW - LutW){wide[LutW-1]}}, wide};
      end
    end
  end

  always_comb begin
    for (int o = 0; o < NOUT; o++) begin
      // output lane o: entry o of each lane word, sign-extended; lanes past c add 0
      sum[o*AccW +: AccW] = '0;
      for (int s = 0; s < NS; s++) begin
        if (lv1_q[s]) begin
          sum[o*AccW +: AccW] = sum[o*AccW +: AccW] + ent[(s*NOUT + o)*AccW +: AccW];
        end
      end
      acc_d[o*AccW +: AccW] = ((first1_q && !acc_i) ? bias[o*AccW +: AccW] : acc_q[mg1_q][o*AccW +: AccW])
                            + sum[o*AccW +: AccW];
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

  // (no reset: a group's first sum starts from the bias, or with acc_i from what a hold_i run left)
  always_ff @(posedge clk_i) begin
    if (v1_q && (!last1_q || hold_i)) begin
      acc_q[mg1_q] <= acc_d;
    end
  end

  // Stage 2: requantize the NOUT accumulators and write the outputs below m.
  logic                 v2_q, end2_q;
  logic [NOUT*AccW-1:0] acc2_q;
  logic [OffW-1:0]      obyte2_q;
  logic [NOUT-1:0]      ov2_q;   // output mb + o < m

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v2_q     <= 1'b0;
      end2_q   <= 1'b0;
      acc2_q   <= '0;
      obyte2_q <= '0;
      ov2_q    <= '0;
    end else begin
      v2_q   <= v1_q && last1_q;
      end2_q <= v1_q && end1_q;
      if (v1_q && last1_q) begin
        acc2_q   <= acc_d;
        obyte2_q <= lo1_q + OffW'(mb1_q);
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

  assign out_we_o   = v2_q && !hold_i;
  assign out_woff_o = obyte2_q;
  assign out_wbe_o  = ov2_q;
  assign done_o     = v2_q && end2_q;

  // Table bytes past the entries of a lane word; bias bits above AccW.
  logic unused;
  assign unused = ^{lut_rdata_i, rows, bias_rdata_i, hf1_q};

`ifndef SYNTHESIS
  // Assertions: the index queue neither over- nor underflows, no index beyond k, no table / bias / output
  // access beyond its buffer, no output group beyond the accumulator sets.
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (!(idx_we_i && 32'(qn_q) == IdxDepth && !pop)) else $fatal(1, "pqa_lookup: index queue overflow");
      if (issue) begin
        for (int s = 0; s < NS; s++) begin
          assert (32'(cb_q) + s >= 32'(c_i) || head[s*KW +: KW] < k_i)
            else $fatal(1, "pqa_lookup: lane %0d: index %0d >= k", s, head[s*KW +: KW]);
        end
        assert ((OffW + 1)'(bias_roff_o) < (OffW + 1)'(BiasBytes))
          else $fatal(1, "pqa_lookup: bias read beyond the buffer (byte %0d)", bias_roff_o);
        assert (32'(mg_q) < MgMax) else $fatal(1, "pqa_lookup: output group %0d beyond MMax", mg_q);
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
