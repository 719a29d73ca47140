// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Encoder: for each of the n_i columns of a run, finds for each of the c subspaces the nearest of the k
// prototypes (squared L2 or L1 distance over v int8 elements; elements at index >= d read as 0), lowest
// index on ties, and hands the indices to the look-up unit's index queue, NS subspaces (a group) at a time.
//
// Parallel datapath of NS subspace lanes x NP distance units x PL elements, streaming the run's subspace
// groups (subspaces g*NS .. g*NS+NS-1 of column j), column after column, through two walkers:
//   gather (the feeder): the group's elements are read into a free slot of the column register col_q (two
//     slots of one group: NS x VPad bytes, VPad = VMax rounded up to whole element groups of PL), element e of
//     the group's lane s at byte s*VPad + e. Column element x = ci*v + e is act byte col_base + j*d + x,
//     or, in conv mode (conv_i), the byte that the
//     convolution address generator (pqa_convgen) points at, read as 0 outside the fmap; x >= d reads as 0.
//     The act read ports (pqa_widemem; GatherRows of them with NS > 1, copies of the buffer) return
//     GatherBytes each from any byte offset, and the gather takes one of three modes (docs/theory.md,
//     "Column feed"):
//     - lanes (conv mode, v = kh*kw: a subspace is one channel's window): GatherRows window rows (port r:
//       row ky + r, at the generator's address + r*w*ch) of P neighbouring window positions (kx .. kx+P-1)
//       of the group's NS channels per cycle, lane s of position kx+p at byte p*ch + s of a row's read
//       (e = (ky+r)*kw + kx + p), P the most positions (up to GatherPos and the row's end) with
//       (P-1)*ch + NS <= GatherBytes; ceil(kh/GatherRows)*ceil(kw/P) cycles a group (the generator steps
//       kx by P, ky by GatherRows and the channel by NS at the end of each window);
//     - contiguous (fully connected, or a 1x1 conv: a column is contiguous act bytes): a group's NS
//       subspaces (NS*v bytes, lane s at byte s*v) per cycle when they fit a read, else one subspace's v
//       bytes per cycle;
//     - element (conv mode otherwise: subspaces that cut across windows): one element per cycle, in the
//       order of x, so the generator walks the column once; v cycles a subspace.
//   encode: one prototype row per cycle (pqa_protomem; docs/isa.md, "On-chip buffers"), walking prototype
//     groups kg and element groups eg of group g (row (g*ceil(k/NP) + kg)*ceil(v/PL) + eg). Stage 0 issues
//     the row read and registers the NS x PL column elements of eg; stage 1 adds PL terms into each of the
//     NS x NP distances and, at the last element group, reduces each lane's NP distances in a comparator
//     tree (the left, lower-index operand wins ties; prototypes at k or beyond are excluded) and keeps the
//     running minimum over the prototype groups (strict less-than: earlier groups have lower indices).
//     After the last prototype group the NS indices of group g go to the look-up unit's queue.
//   The walker (encode) reads the other slot; a group's first row waits for its slot to be full and for
//   the queue's credit (idx_credit_i), its last row frees the slot, and the feeder may fill it from that
//   very cycle (its data land a cycle later). At a column's last read the feeder steps the generator to
//   the next pixel and restarts its element walk in the same cycle.
// Cycles (docs/theory.md, "Streaming a run"; sim.run_cycles): group q is read in F reads from
// s_q = max(s_{q-1} + F_{q-1}, e_{q-2} + R - 1), s_0 = 1 (the start cycle is 0), and encoded in R =
// ceil(k/NP)*ceil(v/PL) rows from e_q = max(e_{q-1} + R, s_q + F + 1) (and the queue's credit); its
// indices are written at e_q + R. F = ceil(kh/GatherRows)*ceil(kw/P) (lanes), 1 or the group's subspaces
// (contiguous), its subspaces * v (element).
// The narrow datapath is NS = NP = PL = 1.

`default_nettype none

module pqa_encoder #(
  parameter int OffW         = 32,    // byte offsets in the act buffer
  parameter int ActBytes     = 4096,
  parameter int CMax         = 32,
  parameter int VMax         = 8,
  parameter int NS           = 1,
  parameter int NP           = 1,
  parameter int PL           = 1,
  parameter int RowAw        = 8,     // bits of a prototype row index (pqa_protomem)
  parameter int GatherPos    = 3,     // window positions a lanes-mode read may cover (HwConfig.GATHER_POSITIONS)
  parameter int GatherRowsMax = 3,    // window rows a lanes-mode gather reads at once (HwConfig.GATHER_ROWS)
  parameter int GatherChGroups = 4,   // channel groups of NS a 3-position read spans (HwConfig.GATHER_CH_GROUPS)
  // Derived, do not override (HwConfig.gather_rows, HwConfig.gather_bytes): with NS > 1, GatherRowsMax act
  // read ports (one per window row) of (GatherPos-1)*GatherCh + NS bytes, GatherCh = min(GatherChGroups*NS,
  // CMax), so that GatherPos positions of NS channels fit at channel counts up to GatherCh; the narrow
  // datapath reads one row of GatherPos*NS bytes.
  parameter int GatherRows   = (NS > 1) ? GatherRowsMax : 1,
  parameter int GatherCh     = (GatherChGroups * NS < CMax) ? GatherChGroups * NS : CMax,
  parameter int GatherSpan   = (NS > 1) ? (GatherPos - 1) * GatherCh + NS : GatherPos * NS,
  parameter int GatherBytes  = (GatherSpan > VMax) ? GatherSpan : VMax  // bytes of an act read
) (
  input  logic                             clk_i,
  input  logic                             rst_ni,
  input  logic                             start_i,      // a run starts: stream its n_i columns
  input  logic [pqa_pkg::RunNW-1:0]        n_i,
  input  logic [pqa_pkg::ShapeMetricW-1:0] metric_i,
  input  logic [pqa_pkg::ShapeKW-1:0]      k_i,
  input  logic [pqa_pkg::ShapeVW-1:0]      v_i,
  input  logic [pqa_pkg::ShapeCW-1:0]      c_i,
  input  logic [pqa_pkg::ShapeDW-1:0]      d_i,
  input  logic [OffW-1:0]                  col_base_i,   // byte offset of column 0 in the act buffer (column j: + j*d)
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
  output logic [GatherRows*OffW-1:0]       act_roff_o,     // byte offsets of the act reads (port r: row ky+r)
  input  logic [GatherRows*GatherBytes*8-1:0] act_rdata_i, // the GatherBytes bytes from each
  output logic [RowAw-1:0]                 proto_raddr_o,  // prototype row
  input  logic [NS*NP*PL*8-1:0]            proto_rdata_i,
  input  logic                             idx_credit_i, // the look-up's index queue takes one more group
  output logic                             idx_we_o,
  output logic [pqa_pkg::ShapeCW-1:0]      idx_group_o,  // subspace group g: subspaces g*NS .. g*NS+NS-1
  output logic [NS*pqa_pkg::ShapeKW-1:0]   idx_wdata_o,  // lane s: the nearest prototype of subspace g*NS+s
  output logic                             done_o        // the run's last group of indices is written
);

  localparam int XoffW    = pqa_pkg::ShapeCW + pqa_pkg::ShapeVW;     // element offsets ci*v + e < c*v
  localparam int KW       = pqa_pkg::ShapeKW;
  localparam int VW       = pqa_pkg::ShapeVW;
  localparam int CW       = pqa_pkg::ShapeCW;
  localparam int GMax     = (CMax + NS - 1) / NS;                    // subspace groups
  localparam int EGMax    = (VMax + PL - 1) / PL;                    // element groups
  localparam int VPad     = EGMax * PL;                             // column register bytes per subspace
  localparam int GroupBits = NS * VPad * 8;                          // column register bits per group
  localparam int PosW     = (NS * VPad > 1) ? $clog2(NS * VPad) : 1; // column register byte positions
  localparam int GW       = (GMax > 1) ? $clog2(GMax) : 1;
  localparam int EGW      = (EGMax > 1) ? $clog2(EGMax) : 1;
  localparam int NPP      = 1 << $clog2(NP);                         // comparator tree leaves
  localparam int DistW    = 32;

  // Feeder (gather) and encode walker, decoupled by the column register's two slots: the feeder fills
  // slot ws_q with the next group while the encode walker reads slot rs_q; full_q[b]: slot b holds a whole
  // group that the walker has not finished reading.
  logic                  f_run_q, e_run_q;   // the feeder / the walker have columns left in the run
  logic [pqa_pkg::RunNW-1:0] fj_q, ej_q;     // columns fed / encoded
  logic [CW:0]           fcb_q;              // the feeder's group: g * NS
  logic [OffW-1:0]       fbase_q;            // the fed column's first byte (col_base + j*d)
  logic                  ws_q, rs_q;
  logic [1:0]            full_q;
  logic                  f_issue, f_col_end, f_end, f_last_g;
  logic                  e_issue, e_free, e_col_end, e_end, e_first;

  // ---------------------------------------------------------------------------------------------
  // Gather: the mode, the walk, and the act read
  // ---------------------------------------------------------------------------------------------
  logic             m_lanes, m_contig;   // gather mode (element when neither)
  logic             m_cgrp;              // contiguous mode, a whole group (NS*v bytes) per read
  logic [CW-1:0]    ci_q;    // subspace (element and contiguous modes)
  logic [VW-1:0]    e_q;     // element (element and lanes modes)
  logic [PosW-1:0]  cpos_q;  // (ci - g*NS) * VPad: the subspace's lane in the group
  logic [XoffW-1:0] xoff_q;  // ci * v + e: the column element (element: that byte; contiguous: e = 0)
  logic [OffW-1:0]  aaddr;
  logic             gather, g_last, g_last_e, g_last_c, g_last_s;

  // Gather stage 1 (the act read is registered): write the column register.
  logic                gv1_q, gpad1_q;
  logic                glast1_q, gslot1_q;  // the group's last read; the slot it writes
  logic [PosW-1:0]     gpos1_q;  // element mode: (ci - g*NS) * VPad + e; contiguous: (ci - g*NS) * VPad
  logic [XoffW-1:0]    gx1_q;    // contiguous mode: ci * v
  logic [GatherRows*GatherPos-1:0] gpv1_q;  // lanes mode: row r, position p is in the window (bit r*GatherPos + p)
  logic [GatherRows*GatherPos-1:0] gpo1_q;  // lanes mode: row r, position p lies outside the fmap
  logic [GatherRows*VW-1:0]        ger1_q;  // lanes mode: e + r*kw, the element of row r's position 0
  logic [GatherPos*32-1:0] gsh1_q;  // lanes mode: p*ch, the byte of lane 0 of position p in the read

  // Lanes mode: the positions a read covers (constant during a run: the largest p <= GatherPos with
  // (p-1)*ch + NS <= GatherBytes), and the walk through the window row.
  localparam int KwW = pqa_pkg::ConvKwW;
  logic [KwW-1:0]  npos;     // positions a read covers
  logic [KwW-1:0]  kx_q;     // the window column of the read's first position
  logic [KwW-1:0]  kleft;    // kw - kx: positions left in the row
  logic            row_end;  // the read reaches the row's end
  logic            gen_row_inside;
  logic signed [31:0] gen_ix, gen_iy;
  logic [OffW-1:0] gen_wch;

  always_comb begin
    npos = KwW'(1);
    for (int p = 2; p <= GatherPos; p++) begin
      if ((p - 1) * 32'(fmap_ch_i) + NS <= GatherBytes && 32'(p) <= 32'(kw_i)) begin
        npos = KwW'(p);
      end
    end
  end
  assign kleft   = kw_i - kx_q;
  assign row_end = (kleft <= npos);

  logic [2*GroupBits-1:0] col_q;  // two slots of one group's NS x VPad bytes, flat (Icarus 11 selects only a packed array's last dimension)
  logic [GroupBits-1:0]   col_rd;  // slot rs_q

  // Convolution address generator: the element (element mode) or window position (lanes mode) of this
  // gather cycle; element 0 of the column (contiguous mode: the pixel's first byte).
  logic            gen_inside;
  logic [OffW-1:0] gen_addr;

  assign gather   = f_issue;
  assign m_lanes  = conv_i && (32'(v_i) == 32'(kh_i) * 32'(kw_i));
  assign m_contig = !m_lanes && (!conv_i || (kh_i == pqa_pkg::ConvKhW'(1) && kw_i == pqa_pkg::ConvKwW'(1)));
  assign m_cgrp   = m_contig && (NS * 32'(v_i) <= GatherBytes);

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
    .ci_step_i   (m_lanes ? (pqa_pkg::FmapChW + 1)'(NS) : (pqa_pkg::FmapChW + 1)'(1)),
    .kx_step_i   (m_lanes ? npos : KwW'(1)),
    .ky_step_i   (m_lanes ? pqa_pkg::ConvKhW'(GatherRows) : pqa_pkg::ConvKhW'(1)),
    .run_start_i (run_start_i),
    .col_next_i  (f_col_end),
    .el_start_i  (!f_run_q || f_col_end),
    .el_next_i   (gather && conv_i && !m_contig),
    .el_save_i   (1'b0),
    .el_restore_i(1'b0),
    .addr_o      (gen_addr),
    .inside_o    (gen_inside),
    .row_inside_o(gen_row_inside),
    .ix_o        (gen_ix),
    .iy_o        (gen_iy),
    .wch_o       (gen_wch)
  );

  assign aaddr      = m_contig ? (conv_i ? gen_addr : fbase_q) + OffW'(xoff_q) : gen_addr;
  always_comb begin
    for (int r = 0; r < GatherRows; r++) begin
      act_roff_o[r*OffW +: OffW] = aaddr + OffW'(r) * gen_wch;
    end
  end
  assign g_last_e   = (e_q == v_i - VW'(1));
  assign g_last_c   = (ci_q == c_i - CW'(1));
  assign g_last_s   = ({1'b0, ci_q} + (CW + 1)'(1) == fcb_q + (CW + 1)'(NS));  // the group's last lane
  // the group's last gather cycle
  assign g_last     = m_lanes ? (row_end && 32'(e_q) + 32'(kleft) + (GatherRows - 1) * 32'(kw_i) >= 32'(v_i))
                    : m_contig ? (m_cgrp || g_last_c || g_last_s) : (g_last_e && (g_last_c || g_last_s));

  // ---------------------------------------------------------------------------------------------
  // Encode stage 0: (g, kg, eg) walk, one prototype row per cycle
  // ---------------------------------------------------------------------------------------------
  logic [GW-1:0]   g_q;
  logic [EGW-1:0]  eg_q;
  logic [CW:0]     cb_q;   // g * NS
  logic [KW:0]     kb_q;   // kg * NP
  logic [VW:0]     eb_q;   // eg * PL
  logic [RowAw-1:0] row_q;
  logic            encode, last_eg, last_kg, last_g;

  assign encode  = e_issue;
  assign last_eg = (eb_q + (VW + 1)'(PL) >= {1'b0, v_i});
  assign last_kg = (kb_q + (KW + 1)'(NP) >= {1'b0, k_i});
  assign last_g  = (cb_q + (CW + 1)'(NS) >= {1'b0, c_i});
  assign proto_raddr_o = row_q;

  // Feeder: a read a cycle while the run has columns left and its slot is free (or being freed this cycle:
  // the read's data land a cycle later); at the group's last read the slot is handed over (full_q is set
  // when that read's data are written) and the feeder goes on with the other slot.
  assign f_last_g  = (fcb_q + (CW + 1)'(NS) >= {1'b0, c_i});
  assign f_issue   = f_run_q && (!full_q[ws_q] || (e_free && rs_q == ws_q));
  assign f_col_end = f_issue && g_last && f_last_g;
  assign f_end     = f_col_end && (fj_q + pqa_pkg::RunNW'(1) == n_i);

  // Encode walker: a row a cycle; a group's first row waits for its slot to be full and for room in the
  // look-up unit's index queue; its last row frees the slot.
  assign e_first   = (kb_q == '0) && (eb_q == '0);
  assign e_issue   = e_run_q && (!e_first || (full_q[rs_q] && idx_credit_i));
  assign e_free    = e_issue && last_eg && last_kg;
  assign e_col_end = e_free && last_g;
  assign e_end     = e_col_end && (ej_q + pqa_pkg::RunNW'(1) == n_i);

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      f_run_q <= 1'b0;
      e_run_q <= 1'b0;
      fj_q    <= '0;
      ej_q    <= '0;
      fcb_q   <= '0;
      fbase_q <= '0;
      ws_q    <= 1'b0;
      rs_q    <= 1'b0;
      full_q  <= '0;
      ci_q    <= '0;
      e_q     <= '0;
      kx_q    <= '0;
      cpos_q  <= '0;
      xoff_q  <= '0;
      g_q     <= '0;
      eg_q    <= '0;
      cb_q    <= '0;
      kb_q    <= '0;
      eb_q    <= '0;
      row_q   <= '0;
    end else if (start_i) begin
      f_run_q <= 1'b1;
      e_run_q <= 1'b1;
      fj_q    <= '0;
      ej_q    <= '0;
      fcb_q   <= '0;
      fbase_q <= col_base_i;
      ws_q    <= 1'b0;
      rs_q    <= 1'b0;
      full_q  <= '0;
      ci_q    <= '0;
      e_q     <= '0;
      kx_q    <= '0;
      cpos_q  <= '0;
      xoff_q  <= '0;
      g_q     <= '0;
      eg_q    <= '0;
      cb_q    <= '0;
      kb_q    <= '0;
      eb_q    <= '0;
      row_q   <= '0;
    end else begin
      if (gather) begin
        if (m_lanes) begin
          if (g_last) begin
            e_q  <= '0;
            kx_q <= '0;
          end else if (row_end) begin
            e_q  <= e_q + VW'(kleft) + VW'((GatherRows - 1) * 32'(kw_i));
            kx_q <= '0;
          end else begin
            e_q  <= e_q + VW'(npos);
            kx_q <= kx_q + npos;
          end
        end else if (m_cgrp) begin
          xoff_q <= xoff_q + XoffW'(NS * 32'(v_i));
          ci_q   <= ci_q + CW'(NS);
        end else if (m_contig) begin
          xoff_q <= xoff_q + XoffW'(v_i);
          ci_q   <= ci_q + CW'(1);
          cpos_q <= g_last_s ? '0 : cpos_q + PosW'(VPad);
        end else begin
          xoff_q <= xoff_q + XoffW'(1);
          if (!g_last_e) begin
            e_q <= e_q + VW'(1);
          end else begin
            e_q    <= '0;
            ci_q   <= ci_q + CW'(1);
            cpos_q <= g_last_s ? '0 : cpos_q + PosW'(VPad);
          end
        end
        if (g_last) begin
          ws_q  <= !ws_q;
          fcb_q <= f_last_g ? '0 : fcb_q + (CW + 1)'(NS);
        end
        if (f_col_end) begin  // the next column starts at its first element
          fj_q    <= fj_q + pqa_pkg::RunNW'(1);
          fbase_q <= fbase_q + OffW'(d_i);
          ci_q    <= '0;
          e_q     <= '0;
          kx_q    <= '0;
          cpos_q  <= '0;
          xoff_q  <= '0;
        end
        if (f_end) begin
          f_run_q <= 1'b0;
        end
      end
      if (encode) begin
        row_q <= row_q + RowAw'(1);
        if (!last_eg) begin
          eg_q <= eg_q + EGW'(1);
          eb_q <= eb_q + (VW + 1)'(PL);
        end else begin
          eg_q <= '0;
          eb_q <= '0;
          if (!last_kg) begin
            kb_q <= kb_q + (KW + 1)'(NP);
          end else begin
            kb_q <= '0;
            g_q  <= g_q + GW'(1);
            cb_q <= cb_q + (CW + 1)'(NS);
          end
        end
        if (e_free) begin
          rs_q <= !rs_q;
        end
        if (e_col_end) begin
          ej_q  <= ej_q + pqa_pkg::RunNW'(1);
          g_q   <= '0;
          cb_q  <= '0;
          row_q <= '0;
        end
        if (e_end) begin
          e_run_q <= 1'b0;
        end
      end
      // slot hand-over: freed by the walker's last row of a group, filled by the feeder's last write
      if (e_free) begin
        full_q[rs_q] <= 1'b0;
      end
      if (gv1_q && glast1_q) begin
        full_q[gslot1_q] <= 1'b1;
      end
    end
  end

  // Gather stage 1 and the column register (no reset: every element a run reads is written first).
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      gv1_q   <= 1'b0;
      glast1_q <= 1'b0;
      gslot1_q <= 1'b0;
      gpad1_q <= 1'b0;
      gpos1_q <= '0;
      gx1_q   <= '0;
      gpv1_q  <= '0;
      gpo1_q  <= '0;
      gsh1_q  <= '0;
    end else begin
      gv1_q   <= gather;
      glast1_q <= gather && g_last;
      gslot1_q <= ws_q;
      // element: x >= d or outside; lanes: outside (x < c*v = d); contiguous: the pixel outside (x >= d below)
      gpad1_q <= (!m_lanes && !m_contig && xoff_q >= XoffW'(d_i)) || (conv_i && !gen_inside);
      gpos1_q <= m_contig ? cpos_q : cpos_q + PosW'(e_q);
      gx1_q   <= xoff_q;
      for (int r = 0; r < GatherRows; r++) begin
        ger1_q[r*VW +: VW] <= e_q + VW'(r * 32'(kw_i));
        for (int p = 0; p < GatherPos; p++) begin
          gpv1_q[r*GatherPos + p] <= (32'(p) < 32'(npos)) && (32'(p) < 32'(kleft))
                                     && (32'(e_q) + r * 32'(kw_i) + p < 32'(v_i));
          gpo1_q[r*GatherPos + p] <= (gen_iy + r < 32'sd0) || (gen_iy + r >= $signed(32'(fmap_h_i)))
                                     || (gen_ix + 32'(p) < 32'sd0) || (gen_ix + 32'(p) >= $signed(32'(fmap_w_i)));
        end
      end
      for (int p = 0; p < GatherPos; p++) begin
        gsh1_q[p*32 +: 32] <= 32'(p) * 32'(fmap_ch_i);
      end
    end
  end

  // Lanes mode: row r, position p's NS bytes, shifted down from byte p*ch of row r's read.
  logic [GatherRows*GatherPos*NS*8-1:0] gpos_bytes;
  always_comb begin
    for (int r = 0; r < GatherRows; r++) begin
      for (int p = 0; p < GatherPos; p++) begin
        gpos_bytes[(r*GatherPos + p)*NS*8 +: NS*8] =
          (NS*8)'(act_rdata_i[r*GatherBytes*8 +: GatherBytes*8] >> (gsh1_q[p*32 +: 32] * 8));
      end
    end
  end

  // The column register's writes, byte by byte at constant positions (lane s, element j): each byte
  // compares its position with the write's, so that synthesis builds one small multiplexer per byte instead
  // of a shifter of the whole register per write.
  logic [GroupBits-1:0] col_d;
  logic [NS*VPad-1:0]   col_we;
  always_comb begin
    col_d  = '0;
    col_we = '0;
    for (int s = 0; s < NS; s++) begin
      for (int j = 0; j < VPad; j++) begin
        if (m_lanes) begin  // (the mode holds for the whole run)
          for (int r = 0; r < GatherRows; r++) begin
            for (int p = 0; p < GatherPos; p++) begin
              if (gpv1_q[r*GatherPos + p] && 32'(ger1_q[r*VW +: VW]) + p == j) begin
                col_we[s*VPad + j]        = 1'b1;
                col_d[(s*VPad + j)*8 +: 8] = gpo1_q[r*GatherPos + p] ? 8'd0
                                           : gpos_bytes[((r*GatherPos + p)*NS + s)*8 +: 8];
              end
            end
          end
        end else if (m_cgrp) begin
          // lane s, element j: byte s*v + j of the read (v's value selects among constant positions)
          if (j < VMax) begin
            col_we[s*VPad + j] = 1'b1;
            for (int vv = 1; vv <= VMax; vv++) begin
              if (32'(v_i) == vv && s*vv + j < GatherBytes) begin
                col_d[(s*VPad + j)*8 +: 8] = (gpad1_q || 32'(gx1_q) + s*vv + j >= 32'(d_i)) ? 8'd0
                                           : act_rdata_i[(s*vv + j)*8 +: 8];
              end
            end
          end
        end else if (m_contig) begin
          if (32'(gpos1_q) == s*VPad && j < VMax) begin
            col_we[s*VPad + j]        = 1'b1;
            col_d[(s*VPad + j)*8 +: 8] = (gpad1_q || 32'(gx1_q) + j >= 32'(d_i)) ? 8'd0 : act_rdata_i[j*8 +: 8];
          end
        end else if (32'(gpos1_q) == s*VPad + j) begin
          col_we[s*VPad + j]        = 1'b1;
          col_d[(s*VPad + j)*8 +: 8] = gpad1_q ? 8'd0 : act_rdata_i[7:0];
        end
      end
    end
  end

  always_ff @(posedge clk_i) begin
    if (gv1_q) begin
      for (int b = 0; b < NS*VPad; b++) begin
        if (col_we[b] && !gslot1_q) begin
          col_q[b*8 +: 8] <= col_d[b*8 +: 8];
        end
        if (col_we[b] && gslot1_q) begin
          col_q[GroupBits + b*8 +: 8] <= col_d[b*8 +: 8];
        end
      end
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Encode stage 0 -> 1: the column elements of (g, eg), masked past c and v; the row's valid bits
  // ---------------------------------------------------------------------------------------------
  logic                          v1_q, first1_q, last1_q, kfirst1_q, klast1_q, end1_q;
  logic [GW-1:0]                 g1_q;
  logic [KW-1:0]                 kb1_q;
  logic [PL-1:0]                 ev1_q;   // element eg*PL + l < v
  logic [NP-1:0]                 kv1_q;   // prototype kg*NP + p < k
  logic [NS*PL*8-1:0]            xs_q;    // lane s, element l at byte s*PL + l
  logic [NS*PL*8-1:0]            xsel;    // its element group eg, lane by lane

  assign col_rd = rs_q ? col_q[2*GroupBits-1:GroupBits] : col_q[GroupBits-1:0];

  always_comb begin
    for (int s = 0; s < NS; s++) begin
      xsel[s*PL*8 +: PL*8] = col_rd[s*VPad*8 + 32'(eg_q)*PL*8 +: PL*8];
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      v1_q      <= 1'b0;
      end1_q    <= 1'b0;
      first1_q  <= 1'b0;
      last1_q   <= 1'b0;
      kfirst1_q <= 1'b0;
      klast1_q  <= 1'b0;
      g1_q      <= '0;
      kb1_q     <= '0;
      ev1_q     <= '0;
      kv1_q     <= '0;
      xs_q      <= '0;
    end else begin
      v1_q      <= encode;
      end1_q    <= e_end;
      first1_q  <= (eb_q == '0);
      last1_q   <= last_eg;
      kfirst1_q <= (kb_q == '0);
      klast1_q  <= last_kg;
      g1_q      <= g_q;
      kb1_q     <= kb_q[KW-1:0];
      for (int l = 0; l < PL; l++) begin
        ev1_q[l] <= (eb_q + (VW + 1)'(l) < {1'b0, v_i});
      end
      for (int p = 0; p < NP; p++) begin
        kv1_q[p] <= (kb_q + (KW + 1)'(p) < {1'b0, k_i});
      end
      for (int s = 0; s < NS; s++) begin
        for (int l = 0; l < PL; l++) begin
          xs_q[(s*PL + l)*8 +: 8] <= (eb_q + (VW + 1)'(l) < {1'b0, v_i} && cb_q + (CW + 1)'(s) < {1'b0, c_i})
                                     ? xsel[(s*PL + l)*8 +: 8] : 8'd0;
        end
      end
    end
  end

  // ---------------------------------------------------------------------------------------------
  // Encode stage 1: NS x NP distances of PL terms, comparator trees, running minimum per lane
  // ---------------------------------------------------------------------------------------------
  // Flat vectors (Icarus 11): distance (s, p) at word s*NP + p, tree node (s, n) at word s*2*NPP + n.
  logic [NS*NP*DistW-1:0]     acc_q, dist_d, sum;
  logic [NS*DistW-1:0]        best_q;
  logic [NS*KW-1:0]           bidx_q, cand;  // cand: the tree's winner as a prototype index
  logic [NS*2*NPP*DistW-1:0]  td;
  logic [NS*2*NPP*KW-1:0]     ti;
  logic [NS*2*NPP-1:0]        tv;
  logic [NS-1:0]              better;

  // One element's distance term: (x - q)^2 (L2) or |x - q| (L1) of two int8 values.
  function automatic logic [DistW-1:0] dist_term(input logic [7:0] x, input logic [7:0] q, input logic l1);
    logic signed [8:0]  diff;
    logic signed [17:0] sq;
    diff = {x[7], x} - {q[7], q};
    sq   = diff * diff;
    if (l1) begin
      dist_term = diff[8] ? DistW'(-diff) : DistW'(diff);
    end else begin
      dist_term = DistW'(sq);
    end
  endfunction

  logic l1;
  always_comb begin
    unique case (metric_i)
      pqa_pkg::ShapeMetricW'(pqa_pkg::MetricL1): l1 = 1'b1;
      pqa_pkg::ShapeMetricW'(pqa_pkg::MetricL2): l1 = 1'b0;
      default:                                   l1 = 1'b0;
    endcase
  end

  always_comb begin
    for (int s = 0; s < NS; s++) begin
      for (int p = 0; p < NP; p++) begin
        sum[(s*NP + p)*DistW +: DistW] = '0;
        for (int l = 0; l < PL; l++) begin
          sum[(s*NP + p)*DistW +: DistW] = sum[(s*NP + p)*DistW +: DistW]
            + dist_term(xs_q[(s*PL + l)*8 +: 8], ev1_q[l] ? proto_rdata_i[((s*NP + p)*PL + l)*8 +: 8] : 8'd0, l1);
        end
        dist_d[(s*NP + p)*DistW +: DistW] = (first1_q ? '0 : acc_q[(s*NP + p)*DistW +: DistW])
                                            + sum[(s*NP + p)*DistW +: DistW];
      end
      // Comparator tree over the NP distance units: leaves NPP..2*NPP-1, node n has children 2n, 2n+1; the
      // left child (lower indices) wins unless the right one is valid and strictly nearer.
      for (int n = 0; n < 2 * NPP; n++) begin
        td[(s*2*NPP + n)*DistW +: DistW] = '0;
        ti[(s*2*NPP + n)*KW +: KW]       = '0;
        tv[s*2*NPP + n]                  = 1'b0;
      end
      for (int p = 0; p < NP; p++) begin
        td[(s*2*NPP + NPP + p)*DistW +: DistW] = dist_d[(s*NP + p)*DistW +: DistW];
        ti[(s*2*NPP + NPP + p)*KW +: KW]       = KW'(p);
        tv[s*2*NPP + NPP + p]                  = kv1_q[p];
      end
      for (int n = NPP - 1; n >= 1; n--) begin
`ifdef PQA_MUTANT_TREE
        // Deliberate bug: on a tie between distance units the higher index wins.
        if (tv[s*2*NPP + 2*n + 1] && (!tv[s*2*NPP + 2*n]
            || td[(s*2*NPP + 2*n + 1)*DistW +: DistW] <= td[(s*2*NPP + 2*n)*DistW +: DistW])) begin
`else
        if (tv[s*2*NPP + 2*n + 1] && (!tv[s*2*NPP + 2*n]
            || td[(s*2*NPP + 2*n + 1)*DistW +: DistW] < td[(s*2*NPP + 2*n)*DistW +: DistW])) begin
`endif
          td[(s*2*NPP + n)*DistW +: DistW] = td[(s*2*NPP + 2*n + 1)*DistW +: DistW];
          ti[(s*2*NPP + n)*KW +: KW]       = ti[(s*2*NPP + 2*n + 1)*KW +: KW];
        end else begin
          td[(s*2*NPP + n)*DistW +: DistW] = td[(s*2*NPP + 2*n)*DistW +: DistW];
          ti[(s*2*NPP + n)*KW +: KW]       = ti[(s*2*NPP + 2*n)*KW +: KW];
        end
        tv[s*2*NPP + n] = tv[s*2*NPP + 2*n] || tv[s*2*NPP + 2*n + 1];
      end
      cand[s*KW +: KW] = kb1_q + ti[(s*2*NPP + 1)*KW +: KW];
`ifdef PQA_MUTANT_TIES
      // Deliberate bug: ties across prototype groups go to the highest index.
      better[s] = kfirst1_q || (td[(s*2*NPP + 1)*DistW +: DistW] <= best_q[s*DistW +: DistW]);
`else
      better[s] = kfirst1_q || (td[(s*2*NPP + 1)*DistW +: DistW] < best_q[s*DistW +: DistW]);
`endif
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      acc_q  <= '0;
      best_q <= '0;
      bidx_q <= '0;
    end else if (v1_q) begin
      acc_q <= dist_d;
      if (last1_q) begin
        for (int s = 0; s < NS; s++) begin
          if (better[s]) begin
            best_q[s*DistW +: DistW] <= td[(s*2*NPP + 1)*DistW +: DistW];
            bidx_q[s*KW +: KW]       <= cand[s*KW +: KW];
          end
        end
      end
    end
  end

  always_comb begin
    for (int s = 0; s < NS; s++) begin
      idx_wdata_o[s*KW +: KW] = better[s] ? cand[s*KW +: KW] : bidx_q[s*KW +: KW];
    end
  end

  assign idx_we_o    = v1_q && last1_q && klast1_q;
  assign idx_group_o = CW'(g1_q);
  assign done_o      = idx_we_o && end1_q;

  // High address bits beyond the buffers (kept in range by the controller's limit checks); tree nodes
  // that only the reduction reads.
  logic unused;
  assign unused = ^{td, ti, tv, sum, cb_q[CW], eb_q[VW], kb_q[KW], act_rdata_i, gen_row_inside};

`ifndef SYNTHESIS
  // Assertions (immediate, so that Icarus 11 runs them too; Verilator needs --assert).
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      if (gather) begin
        // The walk stays inside the shape (the controller checked it before `run`), and no read beyond
        // the act buffer (padded elements read as 0 whatever the address).
        assert (e_q < v_i && (m_lanes || (ci_q < c_i && 32'(ci_q) < CMax)) && 32'(e_q) < VMax)
          else $fatal(1, "pqa_encoder: gather beyond shape e=%0d c=%0d", e_q, ci_q);
        // an element read inside the fmap and below d lies inside the act buffer
        assert (m_lanes || xoff_q >= XoffW'(d_i) || (conv_i && !gen_inside) || (OffW + 1)'(aaddr) < (OffW + 1)'(ActBytes))
          else $fatal(1, "pqa_encoder: act read beyond the end (byte %0d)", aaddr);
      end
      if (encode) begin
        assert (cb_q < {1'b0, c_i} && kb_q < {1'b0, k_i} && eb_q < {1'b0, v_i})
          else $fatal(1, "pqa_encoder: row walk beyond shape c=%0d k=%0d e=%0d", cb_q, kb_q, eb_q);
        // the walker reads a whole group: its slot stays full until its last row
        assert (full_q[rs_q]) else $fatal(1, "pqa_encoder: encoding from slot %0d before it is full", rs_q);
      end
      if (gv1_q) begin
        // the feeder never writes a slot that the walker has not finished
        assert (!full_q[gslot1_q]) else $fatal(1, "pqa_encoder: gather into full slot %0d", gslot1_q);
      end
      if (idx_we_o) begin
        for (int s = 0; s < NS; s++) begin
          assert (32'(g1_q) * NS + s >= 32'(c_i) || idx_wdata_o[s*KW +: KW] < k_i)
            else $fatal(1, "pqa_encoder: index %0d >= k", idx_wdata_o[s*KW +: KW]);
        end
      end
    end
  end
`endif

endmodule

`default_nettype wire
