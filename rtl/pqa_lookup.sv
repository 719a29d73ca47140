// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Look-up and accumulate: for each output m of one column,
//   acc = bias[m] + sum_c lut[c][idx[c]][m]   (AccW-bit wrap-around)
// then requantize (pqa_postproc) and write the byte to the output buffer.
// Holds the idx[] register file that the encoder writes.
//
// Narrow datapath: one table entry per cycle. Stage 0 walks (mi, ci) and issues the table and bias
// reads (registered-read RAMs); stage 1 extracts and accumulates; stage 2 requantizes and writes.
// Cycles per column: m*c + 3 (issue, two drain cycles, done).

`default_nettype none

module pqa_lookup #(
  parameter int LutW     = 8,
  parameter int AccW     = 32,
  parameter int ActW     = 8,
  parameter int CMax     = 32,
  parameter int LutBytes = 16384,
  parameter int BiasWords = 32,
  parameter int OutBytes = 4096,
  // Derived, do not override.
  parameter int LutAw    = $clog2(LutBytes / 8),
  parameter int BiasAw   = (BiasWords > 1) ? $clog2(BiasWords) : 1,
  parameter int OutAw    = $clog2(OutBytes / 8)
) (
  input  logic              clk_i,
  input  logic              rst_ni,
  input  logic              start_i,
  input  logic [7:0]        k_i,
  input  logic [7:0]        c_i,
  input  logic [15:0]       m_i,
  input  logic [15:0]       mult_i,
  input  logic [5:0]        shift_i,
  input  logic              relu_i,
  input  logic              unsigned_i,  // unsigned clamp (bits_i < ActW, checked by pqa_ctrl)
  input  logic [3:0]        bits_i,      // output activation width, 2..ActW (checked by pqa_ctrl)
  input  logic [31:0]       col_out_i,   // byte offset of the column in the output buffer
  // idx[] write port (from the encoder)
  input  logic              idx_we_i,
  input  logic [7:0]        idx_waddr_i,
  input  logic [7:0]        idx_wdata_i,
  // table and bias buffers
  output logic [LutAw-1:0]  lut_raddr_o,
  input  logic [63:0]       lut_rdata_i,
  output logic [BiasAw-1:0] bias_raddr_o,
  input  logic [63:0]       bias_rdata_i,
  // output buffer write port
  output logic              out_we_o,
  output logic [OutAw-1:0]  out_waddr_o,
  output logic [63:0]       out_wdata_o,
  output logic [7:0]        out_wbe_o,
  output logic              done_o
);

  localparam int LutEntryBytes = (LutW + 7) / 8;
  localparam int CAw = (CMax > 1) ? $clog2(CMax) : 1;

  typedef enum logic [1:0] {
    LkIdle,
    LkIssue,
    LkDrain1,
    LkDrain2
  } lk_state_e;

  lk_state_e state_q, state_d;

  logic [7:0] idx_q [CMax];

  always_ff @(posedge clk_i) begin
    if (idx_we_i) begin
      idx_q[idx_waddr_i[CAw-1:0]] <= idx_wdata_i;
    end
  end

  // Stage 0.
  logic [15:0] mi_q;
  logic [7:0]  ci_q;
  logic [31:0] row_q;    // ci * k * m (table entries)
  logic [31:0] km;       // k * m
  logic [31:0] entry, lbyte, bbyte;
  logic        last_c, last_m;

  assign km     = {24'd0, k_i} * {16'd0, m_i};
  assign entry  = row_q + {24'd0, idx_q[ci_q[CAw-1:0]]} * {16'd0, m_i} + {16'd0, mi_q};
  assign lbyte  = (LutEntryBytes == 2) ? {entry[30:0], 1'b0} : entry;
  assign bbyte  = {14'd0, mi_q, 2'b00};
  assign last_c = (ci_q == c_i - 8'd1);
  assign last_m = (mi_q == m_i - 16'd1);

  assign lut_raddr_o  = lbyte[LutAw+2:3];
  assign bias_raddr_o = bbyte[BiasAw+2:3];

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
          ci_q  <= ci_q + 8'd1;
          row_q <= row_q + km;
        end else begin
          ci_q  <= '0;
          row_q <= '0;
          mi_q  <= mi_q + 16'd1;
        end
      end
    end
  end

  // Stage 1: extract the table entry and the bias, accumulate.
  logic        v1_q, first1_q, last1_q, bsel1_q;
  logic [2:0]  lsel1_q;
  logic [15:0] mi1_q;
  logic [71:0] lword;
  logic [15:0] lraw;
  logic [31:0] bias32;
  logic [AccW-1:0] ent, bias, acc_q, acc_d;

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
      first1_q <= (ci_q == 8'd0);
      last1_q  <= last_c;
      bsel1_q  <= mi_q[0];
      lsel1_q  <= lbyte[2:0];
      mi1_q    <= mi_q;
    end
  end

  always_comb begin
    lword  = {8'd0, lut_rdata_i};
    lraw   = lword[lsel1_q*8 +: 16];
    ent    = {{(AccW - LutW){lraw[LutW-1]}}, lraw[LutW-1:0]};
    bias32 = bsel1_q ? bias_rdata_i[63:32] : bias_rdata_i[31:0];
  end

  if (AccW >= 32) begin : gen_bias_ext
    assign bias = {{(AccW - 32){bias32[31]}}, bias32};
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
        acc2_q   <= acc_d;
        obyte2_q <= col_out_i + {16'd0, mi1_q};
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
  assign out_waddr_o = obyte2_q[OutAw+2:3];
  assign out_wdata_o = {8{y}};
  assign out_wbe_o   = 8'd1 << obyte2_q[2:0];
  assign done_o      = (state_q == LkDrain2);

  // High address bits beyond the buffers (kept in range by the controller's limit checks).
  logic unused_addr;
  assign unused_addr = ^{idx_waddr_i, lbyte, bbyte, obyte2_q};

`ifndef SYNTHESIS
  // Assertions: legal state, no index beyond CMax, no table / bias / output access beyond its buffer.
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q == LkIdle || state_q == LkIssue || state_q == LkDrain1 || state_q == LkDrain2)
        else $fatal(1, "pqa_lookup: illegal state %0d", state_q);
      if (idx_we_i) begin
        assert ({24'd0, idx_waddr_i} < 32'(CMax)) else $fatal(1, "pqa_lookup: idx write %0d >= CMax", idx_waddr_i);
      end
      if (state_q == LkIssue) begin
        assert (idx_q[ci_q[CAw-1:0]] < k_i && {1'b0, lbyte} + 33'(LutEntryBytes) <= 33'(LutBytes)
                && {1'b0, bbyte} < 33'(BiasWords * 8))
          else $fatal(1, "pqa_lookup: table read beyond the buffer (entry %0d)", entry);
      end
      if (out_we_o) begin
        assert ({1'b0, obyte2_q} < 33'(OutBytes)) else $fatal(1, "pqa_lookup: output write at byte %0d", obyte2_q);
      end
    end
  end
`endif

endmodule

`default_nettype wire
