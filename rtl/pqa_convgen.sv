// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Convolution address generator (`run` in conv mode, docs/isa.md): for the element e of output pixel j
// that the encoder is reading, the act byte address (iy*w + ix)*ch + ci and whether (iy, ix) lies
// inside the fmap (outside elements read as 0: zero padding). Element e = (ci*kh + ky)*kw + kx,
// pixel j = (oy, ox) with iy = oy*stride + ky - pad_t, ix = ox*stride + kx - pad_l.
//
// Counters only, no divider and no multiplier in the walk: one element per cycle.
//   column (output pixel) state: ox (0..out_w-1), oy0 = oy*stride - pad_t, ox0 = ox*stride - pad_l,
//     org = (oy0*w + ox0)*ch (byte address of window element (ci, ky, kx) = (0, 0, 0)) and the
//     origin of the current output row;
//     run_start_i: pixel 0; col_next_i: the next pixel (ox+1, or the next output row).
//     With el_start_i in the same cycle as col_next_i the element walk starts at the next pixel.
//   element state: (ci, ky, kx), iy, ix, the address a and the address of kx = 0 in this window row;
//     el_start_i: element 0 of the column; el_next_i: the next element (kx by kx_step_i while inside the
//       window row, then ky, then ci by ci_step_i: steps of 1 walk the column element by element; in the
//       encoder's lanes mode ci steps by NS and kx by the window positions one act read covers);
//     el_save_i (with el_next_i): also remember the new position (the first element of a subspace);
//     el_restore_i: back to the remembered position (the encoder walks a subspace once per prototype).
// Address arithmetic is modulo 2^OffW (32 bits in pqa_top): an inside element's address is below
// ActBytes, so its residue is exact whatever the (possibly negative or huge) addresses of the outside
// elements in between. Positions (iy, ix, oy0, ox0) are signed 32-bit.
// The products w*ch, stride*ch, stride*w*ch, kx_step*ch, ky_step*w*ch and pad_t*w*ch + pad_l*ch are registered every cycle from
// the geometry inputs (two pipeline stages): pqa_ctrl starts a conv-mode `run` only after its copy of the
// layer state has held for GeoSettle cycles since the last `shape` / `fmap` / `conv`, so they are settled
// by then (asserted below).

`default_nettype none

module pqa_convgen #(
  parameter int OffW = 32,  // act byte addresses (modulo 2^OffW, see the header)
  parameter int PosW = 32   // signed pixel positions (iy, ix; see the header)
) (
  input  logic                            clk_i,
  input  logic                            rst_ni,
  // geometry (fmap, conv)
  input  logic [pqa_pkg::FmapHW-1:0]      h_i,
  input  logic [pqa_pkg::FmapWW-1:0]      w_i,
  input  logic [pqa_pkg::FmapChW-1:0]     ch_i,
  input  logic [pqa_pkg::ConvStrideW-1:0] stride_i,
  input  logic [pqa_pkg::ConvKhW-1:0]     kh_i,
  input  logic [pqa_pkg::ConvKwW-1:0]     kw_i,
  input  logic [pqa_pkg::ConvPadTW-1:0]   pad_t_i,
  input  logic [pqa_pkg::ConvPadLW-1:0]   pad_l_i,
  input  logic [pqa_pkg::ConvOutWW-1:0]   out_w_i,
  input  logic [pqa_pkg::FmapChW:0]       ci_step_i,   // channels from one window to the next (1, or NS)
  input  logic [pqa_pkg::ConvKwW-1:0]     kx_step_i,   // window columns a step covers (1, or the positions
                                                       // of a lanes-mode read; constant during a run)
  input  logic [pqa_pkg::ConvKhW-1:0]     ky_step_i,   // window rows a step covers (1, or the rows a
                                                       // lanes-mode gather reads at once; constant too)
  // column walk
  input  logic                            run_start_i,
  input  logic                            col_next_i,
  // element walk
  input  logic                            el_start_i,
  input  logic                            el_next_i,
  input  logic                            el_save_i,
  input  logic                            el_restore_i,
  output logic [OffW-1:0]                 addr_o,
  output logic                            inside_o,
  output logic                            row_inside_o,  // 0 <= iy < h (the whole window row's)
  output logic signed [PosW-1:0]          ix_o,          // ix of the element (the row's next ones: ix+1 ..)
  output logic signed [PosW-1:0]          iy_o,          // iy of the element (the rows below: iy+1 ..)
  output logic [OffW-1:0]                 wch_o          // w*ch: the bytes from one fmap row to the next
);

  // Derived products, registered (see the header).
  logic [OffW-1:0] wch_q, sch_q, swch_q, org0_q, xch_q, ywch_q;
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      ywch_q <= '0;
      wch_q  <= '0;
      sch_q  <= '0;
      swch_q <= '0;
      org0_q <= '0;
      xch_q  <= '0;
    end else begin
      xch_q  <= OffW'(kx_step_i) * OffW'(ch_i);
      ywch_q <= OffW'(ky_step_i) * wch_q;
      wch_q  <= OffW'(w_i) * OffW'(ch_i);
      sch_q  <= OffW'(stride_i) * OffW'(ch_i);
      swch_q <= OffW'(stride_i) * wch_q;
      org0_q <= OffW'(0) - (OffW'(pad_t_i) * wch_q + OffW'(pad_l_i) * OffW'(ch_i));
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Column (output pixel) state
  // ---------------------------------------------------------------------------------------------
  logic [pqa_pkg::ConvOutWW-1:0] ox_q;
  logic signed [31:0]            oy0_q, ox0_q;
  logic [OffW-1:0]               org_q, rorg_q;
  logic signed [31:0]            pad_t_s, pad_l_s, stride_s;

  assign pad_t_s  = 32'(pad_t_i);
  assign pad_l_s  = 32'(pad_l_i);
  assign stride_s = 32'(stride_i);

  // The next pixel's column state (col_next_i); with el_start_i in the same cycle the element walk starts
  // at the next pixel (the encoder streams columns back to back).
  logic [pqa_pkg::ConvOutWW-1:0] ox_n;
  logic signed [31:0]            oy0_n, ox0_n, oy0_e, ox0_e;
  logic [OffW-1:0]               org_n, rorg_n, org_e;

  always_comb begin
    if (ox_q == out_w_i - pqa_pkg::ConvOutWW'(1)) begin
      ox_n   = '0;
      oy0_n  = oy0_q + stride_s;
      ox0_n  = -pad_l_s;
      org_n  = rorg_q + swch_q;
      rorg_n = rorg_q + swch_q;
    end else begin
      ox_n   = ox_q + pqa_pkg::ConvOutWW'(1);
      oy0_n  = oy0_q;
      ox0_n  = ox0_q + stride_s;
      org_n  = org_q + sch_q;
      rorg_n = rorg_q;
    end
    oy0_e = col_next_i ? oy0_n : oy0_q;
    ox0_e = col_next_i ? ox0_n : ox0_q;
    org_e = col_next_i ? org_n : org_q;
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      ox_q   <= '0;
      oy0_q  <= '0;
      ox0_q  <= '0;
      org_q  <= '0;
      rorg_q <= '0;
    end else if (run_start_i) begin
      ox_q   <= '0;
      oy0_q  <= -pad_t_s;
      ox0_q  <= -pad_l_s;
      org_q  <= org0_q;
      rorg_q <= org0_q;
    end else if (col_next_i) begin
      ox_q   <= ox_n;
      oy0_q  <= oy0_n;
      ox0_q  <= ox0_n;
      org_q  <= org_n;
      rorg_q <= rorg_n;
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Element state: current (_q), next (_n), saved at the subspace start (_s)
  // ---------------------------------------------------------------------------------------------
  // ci: one bit more than ch (the walk runs past d by < v elements)
  logic [pqa_pkg::FmapChW:0]    ci_q, ci_n, ci_s;
  logic [pqa_pkg::ConvKhW-1:0]  ky_q, ky_n, ky_s;
  logic [pqa_pkg::ConvKwW-1:0]  kx_q, kx_n, kx_s;
  logic signed [31:0]           iy_q, iy_n, iy_s, ix_q, ix_n, ix_s;
  logic [OffW-1:0]              a_q, a_n, a_s, ra_q, ra_n, ra_s;

  always_comb begin
    ci_n = ci_q;
    ky_n = ky_q;
    kx_n = kx_q;
    iy_n = iy_q;
    ix_n = ix_q;
    a_n  = a_q;
    ra_n = ra_q;
    if (32'(kx_q) + 32'(kx_step_i) < 32'(kw_i)) begin
      kx_n = kx_q + kx_step_i;
      ix_n = ix_q + 32'(kx_step_i);
      a_n  = a_q + xch_q;
    end else if (32'(ky_q) + 32'(ky_step_i) < 32'(kh_i)) begin
      kx_n = '0;
      ky_n = ky_q + ky_step_i;
      ix_n = ox0_q;
      iy_n = iy_q + 32'(ky_step_i);
      ra_n = ra_q + ywch_q;
      a_n  = ra_q + ywch_q;
    end else begin
      kx_n = '0;
      ky_n = '0;
      ci_n = ci_q + ci_step_i;
      ix_n = ox0_q;
      iy_n = oy0_q;
      ra_n = org_q + OffW'(ci_q) + OffW'(ci_step_i);
      a_n  = org_q + OffW'(ci_q) + OffW'(ci_step_i);
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      ci_q <= '0;
      ky_q <= '0;
      kx_q <= '0;
      iy_q <= '0;
      ix_q <= '0;
      a_q  <= '0;
      ra_q <= '0;
      ci_s <= '0;
      ky_s <= '0;
      kx_s <= '0;
      iy_s <= '0;
      ix_s <= '0;
      a_s  <= '0;
      ra_s <= '0;
    end else if (el_start_i) begin
      ci_q <= '0;
      ky_q <= '0;
      kx_q <= '0;
      iy_q <= oy0_e;
      ix_q <= ox0_e;
      a_q  <= org_e;
      ra_q <= org_e;
      ci_s <= '0;
      ky_s <= '0;
      kx_s <= '0;
      iy_s <= oy0_e;
      ix_s <= ox0_e;
      a_s  <= org_e;
      ra_s <= org_e;
    end else if (el_restore_i) begin
      ci_q <= ci_s;
      ky_q <= ky_s;
      kx_q <= kx_s;
      iy_q <= iy_s;
      ix_q <= ix_s;
      a_q  <= a_s;
      ra_q <= ra_s;
    end else if (el_next_i) begin
      ci_q <= ci_n;
      ky_q <= ky_n;
      kx_q <= kx_n;
      iy_q <= iy_n;
      ix_q <= ix_n;
      a_q  <= a_n;
      ra_q <= ra_n;
      if (el_save_i) begin
        ci_s <= ci_n;
        ky_s <= ky_n;
        kx_s <= kx_n;
        iy_s <= iy_n;
        ix_s <= ix_n;
        a_s  <= a_n;
        ra_s <= ra_n;
      end
    end
  end

  assign addr_o       = a_q;
  assign row_inside_o = (iy_q >= 32'sd0) && (iy_q < $signed(32'(h_i)));
  assign ix_o         = PosW'(ix_q);
  assign iy_o         = PosW'(iy_q);
  assign wch_o        = wch_q;
  assign inside_o = (iy_q >= 32'sd0) && (iy_q < $signed(32'(h_i)))
                 && (ix_q >= 32'sd0) && (ix_q < $signed(32'(w_i)));

`ifndef SYNTHESIS
  // Assertions (immediate). Checked for the element being issued (next / restore cycles) while it lies
  // inside the window (ci < ch): the counters
  // are inside the shape and the incremental state equals its closed form; an inside element's address
  // lies inside the fmap. Elements beyond the column length d (ci >= ch) read as 0 whatever the state.
  logic signed [63:0] chk_iy, chk_ix, chk_a;
  always_comb begin
    chk_iy = 64'(oy0_q) + 64'(ky_q);
    chk_ix = 64'(ox0_q) + 64'(kx_q);
    chk_a  = (chk_iy * 64'(w_i) + chk_ix) * 64'(ch_i) + 64'(ci_q);
  end

  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      if (run_start_i) begin
        assert (wch_q == OffW'(w_i) * OffW'(ch_i) && sch_q == OffW'(stride_i) * OffW'(ch_i)
                && xch_q == OffW'(kx_step_i) * OffW'(ch_i) && ywch_q == OffW'(ky_step_i) * wch_q
                && swch_q == OffW'(stride_i) * wch_q
                && org0_q == OffW'(0) - (OffW'(pad_t_i) * wch_q + OffW'(pad_l_i) * OffW'(ch_i)))
          else $fatal(1, "pqa_convgen: derived geometry not settled at the start of a run");
      end
      if ((el_next_i || el_restore_i) && ci_q < (pqa_pkg::FmapChW + 1)'(ch_i)) begin
        assert (ky_q < kh_i && kx_q < kw_i && ox_q < out_w_i)
          else $fatal(1, "pqa_convgen: counter beyond the window ky=%0d kx=%0d ox=%0d", ky_q, kx_q, ox_q);
        assert (iy_q == 32'(chk_iy) && ix_q == 32'(chk_ix) && a_q == OffW'(chk_a))
          else $fatal(1, "pqa_convgen: walk state (%0d, %0d, %0d) != (%0d, %0d, %0d)", iy_q, ix_q, a_q,
                      chk_iy, chk_ix, chk_a);
        if (inside_o) begin
          assert (chk_a >= 0 && chk_a < 64'(h_i) * 64'(w_i) * 64'(ch_i))
            else $fatal(1, "pqa_convgen: inside element read at %0d, outside the fmap", chk_a);
        end
      end
    end
  end
`endif

endmodule

`default_nettype wire
