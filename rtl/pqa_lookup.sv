// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Look-up and accumulate: for each output m of one column,
//   acc = bias[m] + sum_c lut[c][idx[c]][m]   (AccW-bit wrap-around)
// then requantize (pqa_postproc) and write the byte to the output buffer.
// Holds the idx[] register file that the encoder writes, NS subspaces (one group) at a time.
//
// Narrow datapath: one table entry per cycle. Stage 0 walks (mi, ci) and issues the table and bias
// reads (registered-read RAMs); stage 1 extracts and accumulates; stage 2 requantizes and writes.
// Cycles per column: m*c + 3 (issue, two drain cycles, done).
// Buffers are read and written a bus word (AxiDataWidth bits) at a time; table entries are one or two
// bytes (LutW <= 16), biases BufBiasElemW = 32 bits, outputs ActW = 8-bit bytes (pqa_top checks these).

`default_nettype none

module pqa_lookup #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int OffW     = 32,  // byte offsets in the output buffer
  parameter int LutW     = 8,
  parameter int AccW     = 32,
  parameter int ActW     = 8,
  parameter int CMax     = 32,
  parameter int NS       = 1,   // subspaces per idx[] write (the encoder's lanes)
  parameter int LutBytes = 16384,
  parameter int BiasWords = 32,
  parameter int OutBytes = 4096,
  // Derived, do not override.
  parameter int LutAw    = $clog2(LutBytes / (AxiDataWidth / 8)),
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
  // table and bias buffers
  output logic [LutAw-1:0]                lut_raddr_o,
  input  logic [AxiDataWidth-1:0]         lut_rdata_i,
  output logic [BiasAw-1:0]               bias_raddr_o,
  input  logic [AxiDataWidth-1:0]         bias_rdata_i,
  // output buffer write port
  output logic                            out_we_o,
  output logic [OutAw-1:0]                out_waddr_o,
  output logic [AxiDataWidth-1:0]         out_wdata_o,
  output logic [AxiDataWidth/8-1:0]       out_wbe_o,
  output logic                            done_o
);

  localparam int LutEntryBytes = pqa_pkg::elem_bytes(LutW);  // bytes of a table entry
  localparam int CPad = (CMax + NS - 1) / NS * NS;   // idx[] entries: whole groups
  localparam int CAw  = (CPad > 1) ? $clog2(CPad) : 1;
  localparam int BusBytes  = AxiDataWidth / 8;
  localparam int BusAlign  = $clog2(BusBytes);        // byte-offset bits within a bus word
  localparam int BiasW     = pqa_pkg::BufBiasElemW;  // bias width (docs/isa.md, "On-chip buffers")
  localparam int BiasPerW  = AxiDataWidth / BiasW;    // biases per bus word
  localparam int BselW     = (BiasPerW > 1) ? $clog2(BiasPerW) : 1;

  typedef enum logic [1:0] {
    LkIdle,
    LkIssue,
    LkDrain1,
    LkDrain2
  } lk_state_e;

  lk_state_e state_q, state_d;

  logic [pqa_pkg::ShapeKW-1:0] idx_q [CPad];

  always_ff @(posedge clk_i) begin
    if (idx_we_i) begin
      for (int s = 0; s < NS; s++) begin
        idx_q[CAw'(32'(idx_group_i) * NS + s)] <= idx_wdata_i[s*pqa_pkg::ShapeKW +: pqa_pkg::ShapeKW];
      end
    end
  end

  // Stage 0.
  logic [pqa_pkg::ShapeMW-1:0] mi_q;
  logic [pqa_pkg::ShapeCW-1:0] ci_q;
  logic [OffW-1:0]             row_q;    // ci * k * m (table entries)
  logic [OffW-1:0]             km;       // k * m
  logic [OffW-1:0]             entry, lbyte, bbyte;
  logic                        last_c, last_m;

  assign km     = OffW'(k_i) * OffW'(m_i);
  assign entry  = row_q + OffW'(idx_q[ci_q[CAw-1:0]]) * OffW'(m_i) + OffW'(mi_q);
  assign lbyte  = (LutEntryBytes == 2) ? {entry[OffW-2:0], 1'b0} : entry;
  assign bbyte  = OffW'(mi_q) << $clog2(BiasW / 8);
  assign last_c = (ci_q == c_i - pqa_pkg::ShapeCW'(1));
  assign last_m = (mi_q == m_i - pqa_pkg::ShapeMW'(1));

  assign lut_raddr_o  = lbyte[LutAw+BusAlign-1:BusAlign];
  assign bias_raddr_o = bbyte[BiasAw+BusAlign-1:BusAlign];

  always_comb begin
    state_d = state_q;
    unique case (state_q)
      LkIdle:   if (start_i) state_d = LkIssue;
      LkIssue:  if (last_c && last_m) state_d = LkDrain1;
      LkDrain1: state_d = LkDrain2;
      LkDrain2: state_d = LkIdle;
      default:  state_d = LkIdle;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q <= LkIdle;
      mi_q    <= '0;
      ci_q    <= '0;
      row_q   <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == LkIdle) begin
        mi_q  <= '0;
        ci_q  <= '0;
        row_q <= '0;
      end else if (state_q == LkIssue) begin
        if (!last_c) begin
          ci_q  <= ci_q + pqa_pkg::ShapeCW'(1);
          row_q <= row_q + km;
        end else begin
          ci_q  <= '0;
          row_q <= '0;
          mi_q  <= mi_q + pqa_pkg::ShapeMW'(1);
        end
      end
    end
  end

  // Stage 1: extract the table entry and the bias, accumulate.
  logic                        v1_q, first1_q, last1_q;
  logic [BselW-1:0]            bsel1_q;  // the bias within its bus word
  logic [BusAlign-1:0]         lsel1_q;  // the table entry's first byte within its bus word
  logic [pqa_pkg::ShapeMW-1:0] mi1_q;
  logic [AxiDataWidth+7:0]     lword;    // a byte beyond the word: a one-byte entry may be the last byte
  logic [15:0]                 lraw;     // one or two bytes
  logic [BiasW-1:0]            bias32;
  logic [AccW-1:0]             ent, bias, acc_q, acc_d;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q     <= 1'b0;
      first1_q <= 1'b0;
      last1_q  <= 1'b0;
      bsel1_q  <= 1'b0;
      lsel1_q  <= '0;
      mi1_q    <= '0;
    end else begin
      v1_q     <= (state_q == LkIssue);
      first1_q <= (ci_q == '0);
      last1_q  <= last_c;
      bsel1_q  <= BselW'(mi_q);  // unused when a bus word holds one bias
      lsel1_q  <= lbyte[BusAlign-1:0];
      mi1_q    <= mi_q;
    end
  end

  always_comb begin
    lword  = {8'd0, lut_rdata_i};
    lraw   = lword[lsel1_q*8 +: 16];
    ent    = {{(AccW - LutW){lraw[LutW-1]}}, lraw[LutW-1:0]};
    bias32 = (BiasPerW > 1) ? bias_rdata_i[bsel1_q*BiasW +: BiasW] : bias_rdata_i[BiasW-1:0];
  end

  if (AccW >= BiasW) begin : gen_bias_ext
    assign bias = {{(AccW - BiasW){bias32[BiasW-1]}}, bias32};
  end else begin : gen_bias_trunc
    assign bias = bias32[AccW-1:0];
  end

  assign acc_d = (first1_q ? bias : acc_q) + ent;

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

  // High address bits beyond the buffers (kept in range by the controller's limit checks).
  logic unused_addr;
  assign unused_addr = ^{idx_group_i, lbyte, bbyte, obyte2_q};

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
        assert (idx_q[ci_q[CAw-1:0]] < k_i
                && (OffW + 1)'(lbyte) + (OffW + 1)'(LutEntryBytes) <= (OffW + 1)'(LutBytes)
                && (OffW + 1)'(bbyte) < (OffW + 1)'(BiasWords * BusBytes))
          else $fatal(1, "pqa_lookup: table read beyond the buffer (entry %0d)", entry);
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
