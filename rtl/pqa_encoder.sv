// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Encoder: for one input column, finds for each of the c subspaces the nearest of the k prototypes
// (squared L2 or L1 distance over v int8 elements; elements at index >= d read as 0), lowest index on ties
// (strict less-than), and writes the index to idx[ci].
//
// Narrow datapath: one element per cycle. Stage 0 walks (ci, ki, e) and issues the reads of the act
// and prototype buffers (registered-read RAMs); stage 1 accumulates the distance and keeps the running
// minimum. Prototypes are laid out [c][k][v], so their byte address is a running counter.
// Column element x = ci*v + e is act byte col_base + x, or, in conv mode (conv_i), the byte that the
// convolution address generator (pqa_convgen) points at, read as 0 outside the fmap. The walk visits a
// subspace's elements once per prototype: the generator saves its state at the first element of a
// subspace and returns to it at the start of the next prototype, as xoff_q returns to sub_q.
// Cycles per column: c*k*v + 2 (issue, drain, done), in both modes.
// Buffers are read a bus word (AxiDataWidth bits) at a time; elements are bytes (int8).

`default_nettype none

module pqa_encoder #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int OffW         = 32,    // byte offsets in the act / proto buffers
  parameter int ActBytes     = 4096,
  parameter int ProtoBytes   = 4096,
  // Derived, do not override.
  parameter int ActAw        = $clog2(ActBytes / (AxiDataWidth / 8)),
  parameter int ProtoAw      = $clog2(ProtoBytes / (AxiDataWidth / 8))
) (
  input  logic                             clk_i,
  input  logic                             rst_ni,
  input  logic                             start_i,
  input  logic [pqa_pkg::ShapeMetricW-1:0] metric_i,
  input  logic [pqa_pkg::ShapeKW-1:0]      k_i,
  input  logic [pqa_pkg::ShapeVW-1:0]      v_i,
  input  logic [pqa_pkg::ShapeCW-1:0]      c_i,
  input  logic [pqa_pkg::ShapeDW-1:0]      d_i,
  input  logic [OffW-1:0]                  col_base_i,   // byte offset of the column in the act buffer
  // conv mode: the column is output pixel j of the fmap / conv geometry (see pqa_convgen)
  input  logic                             conv_i,
  input  logic [pqa_pkg::FmapHW-1:0]       fmap_h_i,
  input  logic [pqa_pkg::FmapWW-1:0]       fmap_w_i,
  input  logic [pqa_pkg::FmapChW-1:0]      fmap_ch_i,
  input  logic [pqa_pkg::ConvStrideW-1:0]  stride_i,
  input  logic [pqa_pkg::ConvKhW-1:0]      kh_i,
  input  logic [pqa_pkg::ConvKwW-1:0]      kw_i,
  input  logic [pqa_pkg::ConvPadTW-1:0]    pad_t_i,
  input  logic [pqa_pkg::ConvPadLW-1:0]    pad_l_i,
  input  logic [pqa_pkg::ConvOutWW-1:0]    out_w_i,
  input  logic                             run_start_i,  // a conv-mode run starts: pixel 0
  input  logic                             col_next_i,   // the next output pixel
  output logic [ActAw-1:0]                 act_raddr_o,
  input  logic [AxiDataWidth-1:0]          act_rdata_i,
  output logic [ProtoAw-1:0]               proto_raddr_o,
  input  logic [AxiDataWidth-1:0]          proto_rdata_i,
  output logic                             idx_we_o,
  output logic [pqa_pkg::ShapeCW-1:0]      idx_waddr_o,  // subspace
  output logic [pqa_pkg::ShapeKW-1:0]      idx_wdata_o,  // its nearest prototype
  output logic                             done_o
);

  localparam int BusAlign = $clog2(AxiDataWidth / 8);               // byte-offset bits within a bus word
  localparam int XoffW    = pqa_pkg::ShapeCW + pqa_pkg::ShapeVW;     // element offsets ci*v + e < c*v

  typedef enum logic [1:0] {
    EncIdle,
    EncIssue,
    EncDrain
  } enc_state_e;

  enc_state_e state_q, state_d;

  // Stage 0 counters.
  logic [pqa_pkg::ShapeVW-1:0] e_q;
  logic [pqa_pkg::ShapeKW-1:0] ki_q;
  logic [pqa_pkg::ShapeCW-1:0] ci_q;
  logic [XoffW-1:0]            sub_q;   // ci * v
  logic [XoffW-1:0]            xoff_q;  // ci * v + e
  logic [OffW-1:0]             paddr_q; // prototype byte address
  logic [OffW-1:0]             aaddr;
  logic                        last_e, last_k, last_c;

  // Stage 1.
  logic                        v1_q, pad1_q, first1_q, last1_q, kfirst1_q, klast1_q;
  logic [pqa_pkg::ShapeKW-1:0] ki1_q;
  logic [pqa_pkg::ShapeCW-1:0] ci1_q;
  logic [BusAlign-1:0]         asel1_q, psel1_q;
  logic [31:0]                 acc_q, best_q;
  logic [pqa_pkg::ShapeKW-1:0] bidx_q;

  logic signed [8:0]  x, p, diff;
  logic signed [17:0] sq;
  logic [31:0] term, dist_sum;
  logic        better;

  // Convolution address generator: element walk in step with xoff_q.
  logic            issue, gen_next, gen_save, gen_restore, gen_inside;
  logic [OffW-1:0] gen_addr;

  assign issue       = (state_q == EncIssue);
  assign gen_next    = issue && conv_i && (!last_e || last_k);
  assign gen_save    = last_e && last_k;            // the first element of the next subspace
  assign gen_restore = issue && conv_i && last_e && !last_k;

  pqa_convgen #(.OffW(OffW)) u_convgen (
    .clk_i       (clk_i),
    .rst_ni      (rst_ni),
    .h_i         (fmap_h_i),
    .w_i         (fmap_w_i),
    .ch_i        (fmap_ch_i),
    .stride_i    (stride_i),
    .kh_i        (kh_i),
    .kw_i        (kw_i),
    .pad_t_i     (pad_t_i),
    .pad_l_i     (pad_l_i),
    .out_w_i     (out_w_i),
    .run_start_i (run_start_i),
    .col_next_i  (col_next_i),
    .el_start_i  (state_q == EncIdle),
    .el_next_i   (gen_next),
    .el_save_i   (gen_save),
    .el_restore_i(gen_restore),
    .addr_o      (gen_addr),
    .inside_o    (gen_inside)
  );

  assign aaddr  = conv_i ? gen_addr : col_base_i + OffW'(xoff_q);
  assign last_e = (e_q == v_i - pqa_pkg::ShapeVW'(1));
  assign last_k = (ki_q == k_i - pqa_pkg::ShapeKW'(1));
  assign last_c = (ci_q == c_i - pqa_pkg::ShapeCW'(1));

  assign act_raddr_o   = aaddr[ActAw+BusAlign-1:BusAlign];
  assign proto_raddr_o = paddr_q[ProtoAw+BusAlign-1:BusAlign];

  always_comb begin
    state_d = state_q;
    unique case (state_q)
      EncIdle:  if (start_i) state_d = EncIssue;
      EncIssue: if (last_e && last_k && last_c) state_d = EncDrain;
      EncDrain: state_d = EncIdle;
      default:  state_d = EncIdle;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q <= EncIdle;
      e_q     <= '0;
      ki_q    <= '0;
      ci_q    <= '0;
      sub_q   <= '0;
      xoff_q  <= '0;
      paddr_q <= '0;
    end else begin
      state_q <= state_d;
      if (state_q == EncIdle) begin
        e_q     <= '0;
        ki_q    <= '0;
        ci_q    <= '0;
        sub_q   <= '0;
        xoff_q  <= '0;
        paddr_q <= '0;
      end else if (state_q == EncIssue) begin
        paddr_q <= paddr_q + OffW'(1);
        if (!last_e) begin
          e_q    <= e_q + pqa_pkg::ShapeVW'(1);
          xoff_q <= xoff_q + XoffW'(1);
        end else begin
          e_q <= '0;
          if (!last_k) begin
            ki_q   <= ki_q + pqa_pkg::ShapeKW'(1);
            xoff_q <= sub_q;
          end else begin
            ki_q   <= '0;
            ci_q   <= ci_q + pqa_pkg::ShapeCW'(1);
            sub_q  <= sub_q + XoffW'(v_i);
            xoff_q <= sub_q + XoffW'(v_i);
          end
        end
      end
    end
  end

  // Stage 0 -> stage 1 pipeline registers.
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q      <= 1'b0;
      pad1_q    <= 1'b0;
      first1_q  <= 1'b0;
      last1_q   <= 1'b0;
      kfirst1_q <= 1'b0;
      klast1_q  <= 1'b0;
      ki1_q     <= '0;
      ci1_q     <= '0;
      asel1_q   <= '0;
      psel1_q   <= '0;
    end else begin
      v1_q      <= (state_q == EncIssue);
      pad1_q    <= (xoff_q >= d_i) || (conv_i && !gen_inside);
      first1_q  <= (e_q == '0);
      last1_q   <= last_e;
      kfirst1_q <= (ki_q == '0);
      klast1_q  <= last_k;
      ki1_q     <= ki_q;
      ci1_q     <= ci_q;
      asel1_q   <= aaddr[BusAlign-1:0];
      psel1_q   <= paddr_q[BusAlign-1:0];
    end
  end

  // Stage 1: distance term, accumulation and running minimum.
  always_comb begin
    x      = pad1_q ? 9'sd0 : {act_rdata_i[asel1_q*8+7], act_rdata_i[asel1_q*8 +: 8]};
    p      = {proto_rdata_i[psel1_q*8+7], proto_rdata_i[psel1_q*8 +: 8]};
    diff   = x - p;
    sq     = diff * diff;
    unique case (metric_i)
      pqa_pkg::ShapeMetricW'(pqa_pkg::MetricL1): term = diff[8] ? {23'd0, -diff} : {23'd0, diff};
      pqa_pkg::ShapeMetricW'(pqa_pkg::MetricL2): term = {14'd0, sq};
      default:                                   term = {14'd0, sq};
    endcase
    dist_sum   = (first1_q ? 32'd0 : acc_q) + term;
`ifdef PQA_MUTANT_TIES
    better = kfirst1_q || (dist_sum <= best_q);  // deliberate bug: ties go to the highest index
`else
    better = kfirst1_q || (dist_sum < best_q);
`endif
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q  <= '0;
      best_q <= '0;
      bidx_q <= '0;
    end else if (v1_q) begin
      acc_q <= dist_sum;
      if (last1_q && better) begin
        best_q <= dist_sum;
        bidx_q <= ki1_q;
      end
    end
  end

  assign idx_we_o    = v1_q && last1_q && klast1_q;
  assign idx_waddr_o = ci1_q;
  assign idx_wdata_o = better ? ki1_q : bidx_q;
  assign done_o      = (state_q == EncDrain);

  // High address bits beyond the buffers (kept in range by the controller's limit checks).
  logic unused_addr;
  assign unused_addr = ^{aaddr, paddr_q};

`ifndef SYNTHESIS
  // Assertions (immediate, so that Icarus 11 runs them too; Verilator needs --assert).
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q == EncIdle || state_q == EncIssue || state_q == EncDrain)
        else $fatal(1, "pqa_encoder: illegal state %0d", state_q);
      if (state_q == EncIssue) begin
        // Walk counters stay inside the shape (the controller checked it before `run`).
        assert (e_q < v_i && ki_q < k_i && ci_q < c_i)
          else $fatal(1, "pqa_encoder: counter beyond shape e=%0d k=%0d c=%0d", e_q, ki_q, ci_q);
        // No read beyond the act / prototype buffers (padded elements, xoff >= d, and in conv mode the
        // elements outside the fmap read as 0 whatever the address: their read may fall beyond the buffer
        // and is harmless).
        assert ((xoff_q >= d_i || (conv_i && !gen_inside) || (OffW + 1)'(aaddr) < (OffW + 1)'(ActBytes))
                && (OffW + 1)'(paddr_q) < (OffW + 1)'(ProtoBytes))
          else $fatal(1, "pqa_encoder: buffer read beyond the end (act %0d, proto %0d)", aaddr, paddr_q);
      end
      if (idx_we_o) begin
        assert (idx_wdata_o < k_i) else $fatal(1, "pqa_encoder: index %0d >= k", idx_wdata_o);
      end
    end
  end
`endif

endmodule

`default_nettype wire
