// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Look-up and accumulate: for each output m of one column,
//   acc = bias[m] + sum_c lut[c][idx[c]][m]   (AccW-bit wrap-around)
// then requantize (pqa_postproc) and write the byte to the output buffer.
// Holds the idx[] register file that the encoder writes, NS subspaces (one group) at a time.
//
// NS lanes: stage 0 walks (mi, g) and issues, for each lane s (subspace g*NS + s), the read of its table
// bank (pqa_rowmem) at row (g*k + idx[g*NS+s]) * m + mi, and the bias read; stage 1 sums the NS entries
// (lanes past c add 0) into the accumulator; stage 2 requantizes and writes. One output per cycle group
// (NOUT = 1: a lane word's first entry).
// Cycles per column: m * ceil(c/NS) + 3 (issue, two drain cycles, done).
// Biases are BufBiasElemW = 32 bits, read a bus word at a time; outputs ActW = 8-bit bytes written a bus
// word at a time; table entries are one or two bytes (LutW <= 16; pqa_top checks these).

`default_nettype none

module pqa_lookup #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int OffW     = 32,  // byte offsets in the output buffer
  parameter int LutW     = 8,
  parameter int AccW     = 32,
  parameter int ActW     = 8,
  parameter int CMax     = 32,
  parameter int NS       = 1,   // subspace lanes (table banks read per cycle)
  parameter int LaneBytes = 1,  // bytes of a table lane word (pqa_rowmem)
  parameter int LutRowAw = 8,   // bits of a table row index (pqa_rowmem)
  parameter int BiasWords = 32,
  parameter int OutBytes = 4096,
  // Derived, do not override.
  parameter int BiasAw   = (BiasWords > 1) ? $clog2(BiasWords) : 1,
  parameter int OutAw    = $clog2(OutBytes / (AxiDataWidth / 8))
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
  input  logic [pqa_pkg::ShapeCW-1:0]     idx_group_i,
  input  logic [NS*pqa_pkg::ShapeKW-1:0]  idx_wdata_i,
  // table (NS lanes) and bias buffers
  output logic [NS*LutRowAw-1:0]          lut_raddr_o,
  input  logic [NS*LaneBytes*8-1:0]       lut_rdata_i,
  output logic [BiasAw-1:0]               bias_raddr_o,
  input  logic [AxiDataWidth-1:0]         bias_rdata_i,
  // output buffer write port
  output logic                            out_we_o,
  output logic [OutAw-1:0]                out_waddr_o,
  output logic [AxiDataWidth-1:0]         out_wdata_o,
  output logic [AxiDataWidth/8-1:0]       out_wbe_o,
  output logic                            done_o
);

  localparam int KW        = pqa_pkg::ShapeKW;
  localparam int CW        = pqa_pkg::ShapeCW;
  localparam int MW        = pqa_pkg::ShapeMW;
  localparam int CPad      = (CMax + NS - 1) / NS * NS;   // idx[] entries: whole groups
  localparam int CAw       = (CPad > 1) ? $clog2(CPad) : 1;
  localparam int BusBytes  = AxiDataWidth / 8;
  localparam int BusAlign  = $clog2(BusBytes);        // byte-offset bits within a bus word
  localparam int BiasW     = pqa_pkg::BufBiasElemW;  // bias width (docs/isa.md, "On-chip buffers")
  localparam int BiasPerW  = AxiDataWidth / BiasW;    // biases per bus word
  localparam int BselW     = (BiasPerW > 1) ? $clog2(BiasPerW) : 1;
  localparam int RowW      = CW + KW + MW + 1;        // (g*k + idx) * m + mi < c*k*m

  typedef enum logic [1:0] {
    LkIdle,
    LkIssue,
    LkDrain1,
    LkDrain2
  } lk_state_e;

  lk_state_e state_q, state_d;

  logic [KW-1:0] idx_q [CPad];

  always_ff @(posedge clk_i) begin
    if (idx_we_i) begin
      for (int s = 0; s < NS; s++) begin
        idx_q[CAw'(32'(idx_group_i) * NS + s)] <= idx_wdata_i[s*KW +: KW];
      end
    end
  end

  // Stage 0.
  logic [MW-1:0]   mi_q;
  logic [CW:0]     cb_q;     // g * NS
  logic [RowW-1:0] gk_q;     // g * k
  logic [OffW-1:0] bbyte;
  logic            last_g, last_m;

  assign bbyte  = OffW'(mi_q) << $clog2(BiasW / 8);
  assign last_g = (cb_q + (CW + 1)'(NS) >= {1'b0, c_i});
  assign last_m = (mi_q == m_i - MW'(1));

  logic [NS*RowW-1:0] rows;   // lane s: its table row
  always_comb begin
    for (int s = 0; s < NS; s++) begin
      rows[s*RowW +: RowW] = (gk_q + RowW'(idx_q[CAw'(32'(cb_q) + s)])) * RowW'(m_i) + RowW'(mi_q);
      lut_raddr_o[s*LutRowAw +: LutRowAw] = rows[s*RowW +: LutRowAw];
    end
  end
  assign bias_raddr_o = bbyte[BiasAw+BusAlign-1:BusAlign];

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
      mi_q    <= '0;
      cb_q    <= '0;
      gk_q    <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == LkIdle) begin
        mi_q <= '0;
        cb_q <= '0;
        gk_q <= '0;
      end else if (state_q == LkIssue) begin
        if (!last_g) begin
          cb_q <= cb_q + (CW + 1)'(NS);
          gk_q <= gk_q + RowW'(k_i);
        end else begin
          cb_q <= '0;
          gk_q <= '0;
          mi_q <= mi_q + MW'(1);
        end
      end
    end
  end

  // Stage 1: extract the NS table entries and the bias, sum, accumulate.
  logic                 v1_q, first1_q, last1_q;
  logic [NS-1:0]        lv1_q;    // lane s holds a subspace (g*NS + s < c)
  logic [BselW-1:0]     bsel1_q;  // the bias within its bus word
  logic [MW-1:0]        mi1_q;
  logic [BiasW-1:0]     bias32;
  logic [AccW-1:0]      sum, bias, acc_q, acc_d;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      lv1_q    <= '0;
      bsel1_q  <= '0;
      mi1_q    <= '0;
    end else begin
      v1_q     <= (state_q == LkIssue);
      first1_q <= (cb_q == '0);
      last1_q  <= last_g;
      for (int s = 0; s < NS; s++) begin
        lv1_q[s] <= (cb_q + (CW + 1)'(s) < {1'b0, c_i});
      end
      bsel1_q  <= BselW'(mi_q);  // unused when a bus word holds one bias
      mi1_q    <= mi_q;
    end
  end

  always_comb begin
    sum = '0;
    for (int s = 0; s < NS; s++) begin
      // the lane word's first entry (NOUT = 1), sign-extended; lanes past c add 0
      if (lv1_q[s]) begin
        sum = sum + {{(AccW - LutW){lut_rdata_i[s*LaneBytes*8 + LutW - 1]}}, lut_rdata_i[s*LaneBytes*8 +: LutW]};
      end
    end
    bias32 = (BiasPerW > 1) ? bias_rdata_i[bsel1_q*BiasW +: BiasW] : bias_rdata_i[BiasW-1:0];
  end

  if (AccW >= BiasW) begin : gen_bias_ext
    assign bias = {{(AccW - BiasW){bias32[BiasW-1]}}, bias32};
  end else begin : gen_bias_trunc
    assign bias = bias32[AccW-1:0];
  end

  assign acc_d = (first1_q ? bias : acc_q) + sum;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q <= '0;
    end else if (v1_q) begin
      acc_q <= acc_d;
    end
  end

  // Stage 2: requantize and write one output byte.
  logic            v2_q;
  logic [AccW-1:0] acc2_q;
  logic [OffW-1:0] obyte2_q;
  logic [ActW-1:0] y;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v2_q     <= 1'b0;
      acc2_q   <= '0;
      obyte2_q <= '0;
    end else begin
      v2_q <= v1_q && last1_q;
      if (v1_q && last1_q) begin
        acc2_q   <= acc_d;
        obyte2_q <= col_out_i + OffW'(mi1_q);
      end
    end
  end

  pqa_postproc #(
    .AccW(AccW),
    .ActW(ActW)
  ) u_postproc (
    .acc_i     (acc2_q),
    .mult_i    (mult_i),
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
  assign done_o      = (state_q == LkDrain2);

  // High address bits beyond the buffers (kept in range by the controller's limit checks); table bytes
  // past the first entry of a lane word.
  logic unused_addr;
  assign unused_addr = ^{idx_group_i, bbyte, obyte2_q, lut_rdata_i, rows};

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
          assert (32'(cb_q) + s >= 32'(c_i) || idx_q[CAw'(32'(cb_q) + s)] < k_i)
            else $fatal(1, "pqa_lookup: lane %0d: index %0d >= k", s, idx_q[CAw'(32'(cb_q) + s)]);
        end
        assert ((OffW + 1)'(bbyte) < (OffW + 1)'(BiasWords * BusBytes))
          else $fatal(1, "pqa_lookup: bias read beyond the buffer (byte %0d)", bbyte);
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
