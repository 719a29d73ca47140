// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// PQA top level: AXI4-Lite register slave (s_axil_*), AXI4 DMA master (m_axi_*), interrupt.
// Parameters are the keys of a named configuration of sw/pqcompile/spec/pqa.yml.
// Reset: rst_ni, active low, asynchronous assertion (all flops), to be released synchronously to
// clk_i by the system. Buffer arrays have no reset.
//
// Datapath: pqa_ctrl runs one instruction at a time; `load` streams bus words into the proto, lut,
// bias, act or out buffer, `run` streams its columns' subspace groups through the encoder (pqa_encoder,
// with the convolution address generator pqa_convgen in conv mode, fed by three act read ports) and the
// look-up unit (pqa_lookup), which requantizes and writes the out buffer; `pool` and `add` run on the vector unit (pqa_vec), which reads the act and out
// buffers and writes the out buffer; `store` and `stamp` write through pqa_dma (a stamp writes the
// controller's record of performance counters, one bus word per counter).
//
// Widths: instruction fields, registers and error codes come from pqa_pkg (generated from the spec),
// bus words from AxiDataWidth; the AXI4 protocol fields (len, size, burst, cache, prot, resp, id) have
// their standard widths. A configuration this datapath does not support stops elaboration with a
// message naming it (below); sub-modules follow the parameters they are given and check nothing.

`default_nettype none

module pqa_top #(
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int AxiAddrWidth = pqa_pkg::CfgDefaultAxiAddrWidth,
  parameter int ActW         = pqa_pkg::CfgDefaultActW,
  parameter int ProtoW       = pqa_pkg::CfgDefaultProtoW,
  parameter int LutW         = pqa_pkg::CfgDefaultLutW,
  parameter int AccW         = pqa_pkg::CfgDefaultAccW,
  parameter int KMax         = pqa_pkg::CfgDefaultKMax,
  parameter int VMax         = pqa_pkg::CfgDefaultVMax,
  parameter int CMax         = pqa_pkg::CfgDefaultCMax,
  parameter int MMax         = pqa_pkg::CfgDefaultMMax,
  parameter int ProtoBytes   = pqa_pkg::CfgDefaultProtoBytes,
  parameter int LutBytes     = pqa_pkg::CfgDefaultLutBytes,
  parameter int ActBytes     = pqa_pkg::CfgDefaultActBytes,
  parameter int OutBytes     = pqa_pkg::CfgDefaultOutBytes,
  // Lanes of the PQ engine (docs/isa.md, "Hardware configurations"): subspaces, distance units per
  // subspace, elements per distance and outputs per cycle. The narrow datapath is NS = NP = PL = NOUT = 1.
  parameter int NS           = pqa_pkg::CfgDefaultNS,
  parameter int NP           = pqa_pkg::CfgDefaultNP,
  parameter int PL           = pqa_pkg::CfgDefaultPL,
  parameter int NOUT         = pqa_pkg::CfgDefaultNOUT
) (
  input  logic                           clk_i,
  input  logic                           rst_ni,
  output logic                           irq_o,
  // AXI4-Lite slave: registers
  input  logic [pqa_pkg::RegAddrW-1:0]   s_axil_awaddr,
  input  logic [2:0]                     s_axil_awprot,
  input  logic                           s_axil_awvalid,
  output logic                           s_axil_awready,
  input  logic [pqa_pkg::RegDataW-1:0]   s_axil_wdata,
  input  logic [pqa_pkg::RegDataW/8-1:0] s_axil_wstrb,
  input  logic                           s_axil_wvalid,
  output logic                           s_axil_wready,
  output logic [1:0]                     s_axil_bresp,
  output logic                           s_axil_bvalid,
  input  logic                           s_axil_bready,
  input  logic [pqa_pkg::RegAddrW-1:0]   s_axil_araddr,
  input  logic [2:0]                     s_axil_arprot,
  input  logic                           s_axil_arvalid,
  output logic                           s_axil_arready,
  output logic [pqa_pkg::RegDataW-1:0]   s_axil_rdata,
  output logic [1:0]                     s_axil_rresp,
  output logic                           s_axil_rvalid,
  input  logic                           s_axil_rready,
  // AXI4 master: external memory
  output logic [0:0]                     m_axi_awid,
  output logic [AxiAddrWidth-1:0]        m_axi_awaddr,
  output logic [7:0]                     m_axi_awlen,
  output logic [2:0]                     m_axi_awsize,
  output logic [1:0]                     m_axi_awburst,
  output logic                           m_axi_awlock,
  output logic [3:0]                     m_axi_awcache,
  output logic [2:0]                     m_axi_awprot,
  output logic                           m_axi_awvalid,
  input  logic                           m_axi_awready,
  output logic [AxiDataWidth-1:0]        m_axi_wdata,
  output logic [AxiDataWidth/8-1:0]      m_axi_wstrb,
  output logic                           m_axi_wlast,
  output logic                           m_axi_wvalid,
  input  logic                           m_axi_wready,
  input  logic [0:0]                     m_axi_bid,
  input  logic [1:0]                     m_axi_bresp,
  input  logic                           m_axi_bvalid,
  output logic                           m_axi_bready,
  output logic [0:0]                     m_axi_arid,
  output logic [AxiAddrWidth-1:0]        m_axi_araddr,
  output logic [7:0]                     m_axi_arlen,
  output logic [2:0]                     m_axi_arsize,
  output logic [1:0]                     m_axi_arburst,
  output logic                           m_axi_arlock,
  output logic [3:0]                     m_axi_arcache,
  output logic [2:0]                     m_axi_arprot,
  output logic                           m_axi_arvalid,
  input  logic                           m_axi_arready,
  input  logic [0:0]                     m_axi_rid,
  input  logic [AxiDataWidth-1:0]        m_axi_rdata,
  input  logic [1:0]                     m_axi_rresp,
  input  logic                           m_axi_rlast,
  input  logic                           m_axi_rvalid,
  output logic                           m_axi_rready
);

  // ---------------------------------------------------------------------------------------------
  // Configuration check: this datapath supports the configurations that sw/pqcompile/spec.py accepts:
  // those that keep the spec's config_rules (docs/isa.md, "Hardware configurations"), whose bounds are
  // the pqa_pkg::CfgRule<Param>* constants. Any other stops elaboration here with a message naming the
  // parameter and its value: $error in a generate block (Verilator, Yosys); Icarus 11 has no
  // elaboration-time tasks, so there it is a $fatal at time 0, before the first clock.
  // ---------------------------------------------------------------------------------------------
  // At least one instruction a beat, at most AXI4's 1024 bits; every buffer is whole bus words.
  localparam int BusWordBytes = AxiDataWidth / 8;
  if (AxiDataWidth < pqa_pkg::CfgRuleAxiDataWidthMin || AxiDataWidth > pqa_pkg::CfgRuleAxiDataWidthMax
      || (pqa_pkg::CfgRuleAxiDataWidthPow2 && !pqa_pkg::is_pow2(AxiDataWidth))
      || ProtoBytes < BusWordBytes || LutBytes < BusWordBytes || ActBytes < BusWordBytes
      || OutBytes < BusWordBytes) begin : gen_bus_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: AxiDataWidth=%0d is not supported: a power of two, %0d..%0d, at most 8 x every buffer's bytes",
      AxiDataWidth, pqa_pkg::CfgRuleAxiDataWidthMin, pqa_pkg::CfgRuleAxiDataWidthMax);
  end
  // int8 activations and prototypes, table entries of one or two bytes.
  if (ActW != pqa_pkg::CfgRuleActWEq || ProtoW != pqa_pkg::CfgRuleProtoWEq) begin : gen_elem_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: ActW=%0d, ProtoW=%0d are not supported, only %0d, %0d",
      ActW, ProtoW, pqa_pkg::CfgRuleActWEq, pqa_pkg::CfgRuleProtoWEq);
  end
  if (LutW < pqa_pkg::CfgRuleLutWMin || LutW > pqa_pkg::CfgRuleLutWMax || AccW < LutW) begin : gen_lut_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: LutW=%0d, AccW=%0d are not supported: LutW %0d..%0d, AccW >= LutW",
      LutW, AccW, pqa_pkg::CfgRuleLutWMin, pqa_pkg::CfgRuleLutWMax);
  end
  if (AxiAddrWidth < pqa_pkg::CfgRuleAxiAddrWidthMin || AxiAddrWidth > pqa_pkg::CfgRuleAxiAddrWidthMax)
  begin : gen_addr_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: AxiAddrWidth=%0d is not supported: %0d..%0d",
      AxiAddrWidth, pqa_pkg::CfgRuleAxiAddrWidthMin, pqa_pkg::CfgRuleAxiAddrWidthMax);
  end
  // The shape limits fit the fields of `shape`.
  if (KMax < pqa_pkg::CfgRuleKMaxMin || KMax > pqa_pkg::CfgRuleKMaxMax
      || VMax < pqa_pkg::CfgRuleVMaxMin || VMax > pqa_pkg::CfgRuleVMaxMax
      || CMax < pqa_pkg::CfgRuleCMaxMin || CMax > pqa_pkg::CfgRuleCMaxMax
      || MMax < pqa_pkg::CfgRuleMMaxMin || MMax > pqa_pkg::CfgRuleMMaxMax)
  begin : gen_shape_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: KMax=%0d, VMax=%0d, CMax=%0d, MMax=%0d are not supported: %0d..%0d, %0d..%0d, %0d..%0d, %0d..%0d",
      KMax, VMax, CMax, MMax, pqa_pkg::CfgRuleKMaxMin, pqa_pkg::CfgRuleKMaxMax, pqa_pkg::CfgRuleVMaxMin,
      pqa_pkg::CfgRuleVMaxMax, pqa_pkg::CfgRuleCMaxMin, pqa_pkg::CfgRuleCMaxMax, pqa_pkg::CfgRuleMMaxMin,
      pqa_pkg::CfgRuleMMaxMax);
  end
  // Buffers of whole bus words, addressed by a bit slice.
  if (ProtoBytes < pqa_pkg::CfgRuleProtoBytesMin || (pqa_pkg::CfgRuleProtoBytesPow2 && !pqa_pkg::is_pow2(ProtoBytes))
      || LutBytes < pqa_pkg::CfgRuleLutBytesMin || (pqa_pkg::CfgRuleLutBytesPow2 && !pqa_pkg::is_pow2(LutBytes))
      || ActBytes < pqa_pkg::CfgRuleActBytesMin || (pqa_pkg::CfgRuleActBytesPow2 && !pqa_pkg::is_pow2(ActBytes))
      || OutBytes < pqa_pkg::CfgRuleOutBytesMin || (pqa_pkg::CfgRuleOutBytesPow2 && !pqa_pkg::is_pow2(OutBytes)))
  begin : gen_buf_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: ProtoBytes=%0d, LutBytes=%0d, ActBytes=%0d, OutBytes=%0d are not supported: 2^n >= %0d/%0d/%0d/%0d",
      ProtoBytes, LutBytes, ActBytes, OutBytes, pqa_pkg::CfgRuleProtoBytesMin, pqa_pkg::CfgRuleLutBytesMin,
      pqa_pkg::CfgRuleActBytesMin, pqa_pkg::CfgRuleOutBytesMin);
  end
  // Lanes: NS <= CMax subspaces, NP <= KMax prototypes, PL <= VMax elements, NOUT <= MMax outputs per cycle.
  if (NS < pqa_pkg::CfgRuleNSMin || NS > CMax || NP < pqa_pkg::CfgRuleNPMin || NP > KMax
      || PL < pqa_pkg::CfgRulePLMin || PL > VMax
      || NOUT < pqa_pkg::CfgRuleNOUTMin || NOUT > MMax)
  begin : gen_lane_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: NS=%0d, NP=%0d, PL=%0d, NOUT=%0d are not supported: %0d..CMax, %0d..KMax, %0d..VMax, %0d..MMax",
      NS, NP, PL, NOUT, pqa_pkg::CfgRuleNSMin, pqa_pkg::CfgRuleNPMin, pqa_pkg::CfgRulePLMin,
      pqa_pkg::CfgRuleNOUTMin);
  end

  // Lane counts as the compute units see them: at least 1, so that a refused configuration elaborates far
  // enough to print the refusal above.
  localparam int LaneNS = (NS > 1) ? NS : 1;
  localparam int LaneNP = (NP > 1) ? NP : 1;
  localparam int LanePL = (PL > 1) ? PL : 1;
  localparam int LaneNOUT = (NOUT > 1) ? NOUT : 1;

  localparam int BusBytes  = AxiDataWidth / 8;
  localparam int OffW      = 32;  // byte offsets of a column in the act / out buffers (pqa_ctrl)
  localparam int BeatsW    = pqa_pkg::LoadNbytesW - $clog2(BusBytes) + 1;  // bus words of a transfer
  localparam int BiasBytes = pqa_pkg::elem_bytes(pqa_pkg::BufBiasElemW) * MMax;  // MMax int32 biases
  localparam int BiasWords = (BiasBytes + BusBytes - 1) / BusBytes;
  // banks of the table buffers (the spec gives proto, lut and bias the same number)
  localparam int TblBanks  = pqa_pkg::BufProtoBanks;
  localparam int ActBanks  = pqa_pkg::BufActBanks;
  if (pqa_pkg::BufLutBanks != TblBanks || pqa_pkg::BufBiasBanks != TblBanks || ActBanks != 2
      || pqa_pkg::BufOutBanks != 1 || TblBanks > 2) begin : gen_bank_spec  // a spec fact, not a configuration rule
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_top: the spec's banks are not supported (proto, lut and bias alike, at most 2; act 2, out 1)");
  end
  localparam int ProtoAw   = $clog2(ProtoBytes / BusBytes);
  // Prototype rows (pqa_protomem): NS*NP*PL int8 elements every ProtoStride bytes, whole rows only.
  localparam int ProtoRowBytes = LaneNS * LaneNP * LanePL;
  localparam int ProtoRows     = ProtoBytes / pqa_pkg::row_stride(ProtoRowBytes, BusBytes);
  localparam int ProtoRowAw    = (ProtoRows > 1) ? $clog2(ProtoRows) : 1;
  // Table rows (pqa_rowmem): NS lane words of NOUT entries, whole rows only.
  localparam int LutLaneBytes  = pqa_pkg::row_stride(LaneNOUT * pqa_pkg::elem_bytes(LutW), BusBytes);
  localparam int LutRows       = LutBytes / pqa_pkg::row_stride(LaneNS * LutLaneBytes, BusBytes);
  localparam int LutRowAw      = (LutRows > 1) ? $clog2(LutRows) : 1;
  localparam int LutAw     = $clog2(LutBytes / BusBytes);
  localparam int BiasAw    = (BiasWords > 1) ? $clog2(BiasWords) : 1;
  // The bias and out buffers (pqa_widemem) move NOUT biases / outputs a cycle: NOUT*4 bytes at multiples of
  // 4 * (the largest power of two dividing NOUT), NOUT bytes at any byte.
  localparam int BiasGroupBytes = LaneNOUT * pqa_pkg::elem_bytes(pqa_pkg::BufBiasElemW);
  localparam int BiasAlign = BiasGroupBytes & -BiasGroupBytes;
  localparam int BiasPortBytes = (BiasGroupBytes > BusBytes) ? BiasGroupBytes : BusBytes;
  localparam int OutPortBytes  = (LaneNOUT > BusBytes) ? LaneNOUT : BusBytes;
  // The act buffer (pqa_widemem) gives the encoder GatherBytes from any byte a cycle on each of GatherRows
  // read ports (copies of the buffer, written together; port 0 also serves the vector unit): GatherPos window
  // positions of NS channels at channel counts up to min(GatherChGroups*NS, CMax), on GatherRows window rows
  // at once
  // (HwConfig.GATHER_POSITIONS, HwConfig.GATHER_ROWS, HwConfig.gather_rows, HwConfig.gather_bytes).
  localparam int GatherPos     = 3;
  localparam int GatherRowsMax = 3;
  localparam int GatherRows    = (LaneNS > 1) ? GatherRowsMax : 1;
  localparam int GatherChGroups = 4;  // channel groups of NS up to which a read covers GatherPos positions
  localparam int GatherCh      = (GatherChGroups * LaneNS < CMax) ? GatherChGroups * LaneNS : CMax;
  localparam int GatherSpan    = (LaneNS > 1) ? (GatherPos - 1) * GatherCh + LaneNS : GatherPos * LaneNS;
  localparam int GatherBytes   = (GatherSpan > VMax) ? GatherSpan : VMax;
  // The act buffer's port also takes the look-up unit's NOUT outputs a cycle (a result kept on chip).
  localparam int ActWideBytes  = (GatherBytes > LaneNOUT) ? GatherBytes : LaneNOUT;
  localparam int ActPortBytes  = (ActWideBytes > BusBytes) ? ActWideBytes : BusBytes;
  // The vector unit's lanes: as wide as the act and out buffers' ports (HwConfig.vec_lanes).
  localparam int VecLanes      = (ActPortBytes < OutPortBytes) ? ActPortBytes : OutPortBytes;
  localparam int ActAw     = $clog2(ActBytes / BusBytes);
  localparam int OutAw     = $clog2(OutBytes / BusBytes);
  localparam int ClearAw   = (ProtoAw > LutAw && ProtoAw > BiasAw && ProtoAw > ActAw && ProtoAw > OutAw) ? ProtoAw
                           : (LutAw > BiasAw && LutAw > ActAw && LutAw > OutAw) ? LutAw
                           : (BiasAw > ActAw && BiasAw > OutAw) ? BiasAw
                           : (ActAw > OutAw) ? ActAw : OutAw;

  // ---------------------------------------------------------------------------------------------
  // Register file and controller
  // ---------------------------------------------------------------------------------------------
  logic                         start, busy, finish;
  logic [pqa_pkg::RegDataW-1:0] insn_base, err_pc, insn_count;
  logic [pqa_pkg::ErrW-1:0]     err_code;
  logic [pqa_pkg::CyclesW-1:0]  cycles;
  logic                         clear;
  logic [ClearAw-1:0]           clear_addr;

  pqa_regs u_regs (
    .clk_i         (clk_i),
    .rst_ni        (rst_ni),
    .s_axil_awaddr (s_axil_awaddr),
    .s_axil_awprot (s_axil_awprot),
    .s_axil_awvalid(s_axil_awvalid),
    .s_axil_awready(s_axil_awready),
    .s_axil_wdata  (s_axil_wdata),
    .s_axil_wstrb  (s_axil_wstrb),
    .s_axil_wvalid (s_axil_wvalid),
    .s_axil_wready (s_axil_wready),
    .s_axil_bresp  (s_axil_bresp),
    .s_axil_bvalid (s_axil_bvalid),
    .s_axil_bready (s_axil_bready),
    .s_axil_araddr (s_axil_araddr),
    .s_axil_arprot (s_axil_arprot),
    .s_axil_arvalid(s_axil_arvalid),
    .s_axil_arready(s_axil_arready),
    .s_axil_rdata  (s_axil_rdata),
    .s_axil_rresp  (s_axil_rresp),
    .s_axil_rvalid (s_axil_rvalid),
    .s_axil_rready (s_axil_rready),
    .start_o       (start),
    .insn_base_o   (insn_base),
    .irq_o         (irq_o),
    .busy_i        (busy),
    .finish_i      (finish),
    .err_code_i    (err_code),
    .err_pc_i      (err_pc),
    .insn_count_i  (insn_count),
    .cycles_i      (cycles)
  );

  logic                             rd_cmd_valid, rd_done, rd_err, wr_cmd_valid, wr_done, wr_err;
  logic [AxiAddrWidth-1:0]          rd_cmd_addr, wr_cmd_addr;
  logic [BeatsW-1:0]                rd_cmd_beats, wr_cmd_beats, dma_rd_idx, dma_src_idx;
  logic [BusBytes-1:0]              wr_cmd_last_strb;
  logic                             dma_rd_valid, dma_src_req;
  logic [AxiDataWidth-1:0]          dma_rd_data, dma_src_data;
  logic                             load_active, stamp_sel, st_half;
  logic [pqa_pkg::LoadBufW-1:0]     load_buf;
  logic [pqa_pkg::LoadBankW-1:0]    load_bank;  // the bank a `load` writes
  logic [pqa_pkg::ShapeBankW-1:0]   tbl_bank;   // the bank of the table buffers that a `run` reads
  logic                             lut_pack;   // shape.pack: byte table entries, two table rows a row
  logic [pqa_pkg::RunSrcW-1:0]      cu_src;     // the act bank the compute unit reads
  logic [pqa_pkg::RunDstW-1:0]      cu_dst;     // where its results go (enum target)
  logic [pqa_pkg::PerfWords*pqa_pkg::CyclesW-1:0] stamp_rec;  // the performance counters of a stamp
  logic [AxiDataWidth-1:0]          stamp_word;                 // the record's beat that the DMA writes
  logic [pqa_pkg::ShapeMetricW-1:0] metric;
  logic                             relu, act_unsigned, conv;
  logic [pqa_pkg::FmapHW-1:0]       fmap_h;
  logic [pqa_pkg::FmapWW-1:0]       fmap_w;
  logic [pqa_pkg::FmapChW-1:0]      fmap_ch;
  logic [pqa_pkg::ConvStrideW-1:0]  stride;
  logic [pqa_pkg::ConvKhW-1:0]      kh;
  logic [pqa_pkg::ConvKwW-1:0]      kw;
  logic [pqa_pkg::ConvPadTW-1:0]    pad_t;
  logic [pqa_pkg::ConvPadLW-1:0]    pad_l;
  logic [pqa_pkg::ConvOutWW-1:0]    out_w;
  logic [pqa_pkg::AddNW-1:0]        add_n;
  logic [pqa_pkg::AddMaW-1:0]       add_ma;
  logic [pqa_pkg::AddMbW-1:0]       add_mb;
  logic                             run_start, vec_start, vec_add, vec_active, vec_done;
  logic [pqa_pkg::ShapeKW-1:0]      k;
  logic [pqa_pkg::ShapeVW-1:0]      v;
  logic [pqa_pkg::ShapeCW-1:0]      c;
  logic [pqa_pkg::ShapeDW-1:0]      d;
  logic [pqa_pkg::ShapeMW-1:0]      m;
  logic [pqa_pkg::QuantMultW-1:0]   mult;
  logic [pqa_pkg::QuantShiftW-1:0]  shift;
  logic [pqa_pkg::QuantBitsW-1:0]   act_bits;
  logic [pqa_pkg::RunNW-1:0]        run_n;
  logic [pqa_pkg::RunOstrideW-1:0]  run_ostride;
  logic [pqa_pkg::RunOoffW-1:0]     run_ooff;
  logic                             run_hold, run_acc;
  logic                             enc_start, enc_done, lk_start, lk_done, idx_credit;

  pqa_ctrl #(
    .AxiAddrWidth(AxiAddrWidth),
    .AxiDataWidth(AxiDataWidth),
    .KMax        (KMax),
    .VMax        (VMax),
    .CMax        (CMax),
    .MMax        (MMax),
    .LutW        (LutW),
    .ActW        (ActW),
    .ProtoBytes  (ProtoBytes),
    .LutBytes    (LutBytes),
    .BiasBytes   (BiasBytes),
    .ActBytes    (ActBytes),
    .OutBytes    (OutBytes),
    .ClearAw     (ClearAw),
    .NS          (LaneNS),
    .NP          (LaneNP),
    .PL          (LanePL),
    .NOUT        (NOUT)
  ) u_ctrl (
    .clk_i              (clk_i),
    .rst_ni             (rst_ni),
    .start_i            (start),
    .insn_base_i        (insn_base),
    .busy_o             (busy),
    .finish_o           (finish),
    .err_code_o         (err_code),
    .err_pc_o           (err_pc),
    .insn_count_o       (insn_count),
    .cycles_o           (cycles),
    .clear_o            (clear),
    .clear_addr_o       (clear_addr),
    .rd_cmd_valid_o     (rd_cmd_valid),
    .rd_cmd_addr_o      (rd_cmd_addr),
    .rd_cmd_beats_o     (rd_cmd_beats),
    .rd_done_i          (rd_done),
    .rd_err_i           (rd_err),
    .wr_cmd_valid_o     (wr_cmd_valid),
    .wr_cmd_addr_o      (wr_cmd_addr),
    .wr_cmd_beats_o     (wr_cmd_beats),
    .wr_cmd_last_strb_o (wr_cmd_last_strb),
    .wr_done_i          (wr_done),
    .wr_err_i           (wr_err),
    .dma_rd_valid_i     (dma_rd_valid),
    .dma_rd_data_i      (dma_rd_data),
    .load_active_o      (load_active),
    .load_buf_o         (load_buf),
    .load_bank_o        (load_bank),
    .tbl_bank_o         (tbl_bank),
    .cu_src_o           (cu_src),
    .cu_dst_o           (cu_dst),
    .stamp_sel_o        (stamp_sel),
    .st_half_o          (st_half),
    .stamp_rec_o        (stamp_rec),
    .rd_beat_i          (m_axi_rvalid && m_axi_rready),  // accepted beats on the AXI master
    .wr_beat_i          (m_axi_wvalid && m_axi_wready),
    .metric_o           (metric),
    .pack_o             (lut_pack),
    .k_o                (k),
    .v_o                (v),
    .c_o                (c),
    .d_o                (d),
    .m_o                (m),
    .relu_o             (relu),
    .unsigned_o         (act_unsigned),
    .bits_o             (act_bits),
    .shift_o            (shift),
    .mult_o             (mult),
    .run_n_o            (run_n),
    .run_ostride_o      (run_ostride),
    .run_ooff_o         (run_ooff),
    .run_hold_o         (run_hold),
    .run_acc_o          (run_acc),
    .conv_o             (conv),
    .fmap_h_o           (fmap_h),
    .fmap_w_o           (fmap_w),
    .fmap_ch_o          (fmap_ch),
    .stride_o           (stride),
    .kh_o               (kh),
    .kw_o               (kw),
    .pad_t_o            (pad_t),
    .pad_l_o            (pad_l),
    .out_w_o            (out_w),
    .add_n_o            (add_n),
    .add_ma_o           (add_ma),
    .add_mb_o           (add_mb),
    .enc_start_o        (enc_start),
    .lk_start_o         (lk_start),
    .lk_done_i          (lk_done),
    .run_start_o        (run_start),
    .vec_start_o        (vec_start),
    .vec_add_o          (vec_add),
    .vec_active_o       (vec_active),
    .vec_done_i         (vec_done)
  );

  // ---------------------------------------------------------------------------------------------
  // DMA
  // ---------------------------------------------------------------------------------------------
  pqa_dma #(
    .AxiAddrWidth(AxiAddrWidth),
    .AxiDataWidth(AxiDataWidth)
  ) u_dma (
    .clk_i          (clk_i),
    .rst_ni         (rst_ni),
    .rd_cmd_valid_i    (rd_cmd_valid),
    .rd_cmd_addr_i     (rd_cmd_addr),
    .rd_cmd_beats_i    (rd_cmd_beats),
    .rd_done_o         (rd_done),
    .rd_err_o          (rd_err),
    .wr_cmd_valid_i    (wr_cmd_valid),
    .wr_cmd_addr_i     (wr_cmd_addr),
    .wr_cmd_beats_i    (wr_cmd_beats),
    .wr_cmd_last_strb_i(wr_cmd_last_strb),
    .wr_done_o         (wr_done),
    .wr_err_o          (wr_err),
    .rd_valid_o     (dma_rd_valid),
    .rd_idx_o       (dma_rd_idx),
    .rd_data_o      (dma_rd_data),
    .src_req_o      (dma_src_req),
    .src_idx_o      (dma_src_idx),
    .src_data_i     (dma_src_data),
    .m_axi_awid     (m_axi_awid),
    .m_axi_awaddr   (m_axi_awaddr),
    .m_axi_awlen    (m_axi_awlen),
    .m_axi_awsize   (m_axi_awsize),
    .m_axi_awburst  (m_axi_awburst),
    .m_axi_awlock   (m_axi_awlock),
    .m_axi_awcache  (m_axi_awcache),
    .m_axi_awprot   (m_axi_awprot),
    .m_axi_awvalid  (m_axi_awvalid),
    .m_axi_awready  (m_axi_awready),
    .m_axi_wdata    (m_axi_wdata),
    .m_axi_wstrb    (m_axi_wstrb),
    .m_axi_wlast    (m_axi_wlast),
    .m_axi_wvalid   (m_axi_wvalid),
    .m_axi_wready   (m_axi_wready),
    .m_axi_bid      (m_axi_bid),
    .m_axi_bresp    (m_axi_bresp),
    .m_axi_bvalid   (m_axi_bvalid),
    .m_axi_bready   (m_axi_bready),
    .m_axi_arid     (m_axi_arid),
    .m_axi_araddr   (m_axi_araddr),
    .m_axi_arlen    (m_axi_arlen),
    .m_axi_arsize   (m_axi_arsize),
    .m_axi_arburst  (m_axi_arburst),
    .m_axi_arlock   (m_axi_arlock),
    .m_axi_arcache  (m_axi_arcache),
    .m_axi_arprot   (m_axi_arprot),
    .m_axi_arvalid  (m_axi_arvalid),
    .m_axi_arready  (m_axi_arready),
    .m_axi_rid      (m_axi_rid),
    .m_axi_rdata    (m_axi_rdata),
    .m_axi_rresp    (m_axi_rresp),
    .m_axi_rlast    (m_axi_rlast),
    .m_axi_rvalid   (m_axi_rvalid),
    .m_axi_rready   (m_axi_rready)
  );

  // ---------------------------------------------------------------------------------------------
  // On-chip buffers: bus-word memories, written by `load` beat by beat (word index = beat index),
  // cleared to zero by a sweep after each start (the ISS starts every run from zeroed buffers)
  // ---------------------------------------------------------------------------------------------
  logic [ProtoRowAw-1:0]    proto_raddr;
  logic [ProtoRowBytes*8-1:0] proto_rdata;
  logic [LaneNS*LutRowAw-1:0]       lut_raddr;
  logic [LaneNS*LutLaneBytes*8-1:0] lut_rdata;
  logic [OffW-1:0]    bias_roff;
  logic [BiasPortBytes*8-1:0] bias_rdata;
  logic [OffW-1:0]    act_roff, vec_act_roff;
  logic [GatherRows*OffW-1:0] enc_act_roff;
  logic [ActPortBytes*8-1:0] act_rline;
  logic [GatherRows*GatherBytes*8-1:0] enc_act_rdata;  // port r: row r of a lanes-mode gather
  logic [OffW-1:0]         out_roff, vec_out_roff;
  logic [AxiDataWidth-1:0] out_rdata;
  logic [OutPortBytes*8-1:0] out_rline;
  logic                    lk_out_we, vec_out_we;
  logic [OffW-1:0]         lk_out_woff;
  logic [OffW-1:0]         vec_out_woff;
  logic [LaneNOUT*ActW-1:0] lk_out_wdata;
  logic [LaneNOUT-1:0]     lk_out_wbe;
  logic [VecLanes*ActW-1:0] vec_out_wdata;
  logic [VecLanes-1:0]     vec_out_wbe;
  logic [OffW-1:0]         out_woff;
  logic [OutPortBytes*8-1:0] out_wdata;
  logic [OutPortBytes-1:0] out_wbe;
  logic                    we_proto, we_lut, we_bias, we_act, we_out;

  assign we_proto = dma_rd_valid && load_active && (load_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferProto));
  assign we_lut   = dma_rd_valid && load_active && (load_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferLut));
  assign we_bias  = dma_rd_valid && load_active && (load_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferBias));
  assign we_act   = dma_rd_valid && load_active && (load_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferAct));
  assign we_out   = dma_rd_valid && load_active && (load_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferOut));

  // Shared ports (one unit at a time, sequenced by pqa_ctrl): the act read port belongs to the vector
  // unit during `pool` / `add` and to the encoder otherwise; the out read port to the vector unit
  // during `add` and to the DMA (store) otherwise; the out write port to the clear sweep, a `load` into
  // `out`, or the look-up unit (`run`) or the vector unit when the instruction's dst is `out`.
  assign act_roff  = vec_active ? vec_act_roff : enc_act_roff[OffW-1:0];
  assign out_roff  = (vec_active && vec_add) ? vec_out_roff
                   : (OffW'(dma_src_idx[OutAw-1:0]) << $clog2(BusBytes)) + (st_half ? OffW'(OutBytes / 2) : OffW'(0));
  // The results of the compute unit: the vector unit's (`pool`, `add`) or the look-up unit's (`run`), to
  // the out buffer or an act bank (cu_dst).
  logic                     res_to_act, res_we;
  logic [OffW-1:0]          res_woff;
  logic [ActPortBytes*8-1:0] res_wdata;
  logic [ActPortBytes-1:0]  res_wbe;
  assign res_we = lk_out_we || vec_out_we;
  assign res_to_act = (32'(cu_dst) != pqa_pkg::TargetOut);
  always_comb begin
    if (vec_out_we) begin
      res_woff  = vec_out_woff;
      res_wdata = (ActPortBytes*8)'(vec_out_wdata);
      res_wbe   = ActPortBytes'(vec_out_wbe);
    end else begin
      res_woff  = lk_out_woff;
      res_wdata = (ActPortBytes*8)'(lk_out_wdata);
      res_wbe   = ActPortBytes'(lk_out_wbe);
    end
  end
  // Bus-word writes go to the out buffer's wide port at word offsets, in the low bus word of its data.
  always_comb begin
    if (clear) begin
      out_woff = OffW'(clear_addr[OutAw-1:0]) << $clog2(BusBytes);
      out_wdata = '0;
      out_wbe   = OutPortBytes'({BusBytes{1'b1}});
    end else if (we_out) begin
      out_woff  = OffW'(dma_rd_idx[OutAw-1:0]) << $clog2(BusBytes);
      out_wdata = (OutPortBytes*8)'(dma_rd_data);
      out_wbe   = OutPortBytes'({BusBytes{1'b1}});  // loads write whole words
    end else begin  // a result (its port is at least as wide as the out buffer's)
      out_woff  = res_woff;
      out_wdata = (OutPortBytes*8)'(res_wdata);
      out_wbe   = OutPortBytes'(res_wbe);
    end
  end

  // The table buffers have TblBanks banks each (spec buffers.*.banks): a `load` writes bank load_bank, a
  // `run` reads bank tbl_bank (shape.bank), so that the next run's tables load while this one computes.
  // The clear sweep zeroes every bank. The read data come from the run's bank (registered reads: the bank
  // is stable through a run).
  logic [TblBanks-1:0][ProtoRowBytes*8-1:0]         proto_rdata_b;
  logic [TblBanks-1:0][LaneNS*LutLaneBytes*8-1:0]   lut_rdata_b;
  logic [TblBanks-1:0][BiasPortBytes*8-1:0]         bias_rdata_b;
  for (genvar b = 0; b < TblBanks; b++) begin : gen_tbl_bank
    logic we_bank;
    assign we_bank = (load_bank == pqa_pkg::LoadBankW'(b));
    pqa_protomem #(
      .AxiDataWidth(AxiDataWidth),
      .ProtoBytes  (ProtoBytes),
      .RowBytes    (ProtoRowBytes)
    ) u_proto_mem (
      .clk_i  (clk_i),
      .we_i   (clear || (we_proto && we_bank)),
      .waddr_i(clear ? clear_addr[ProtoAw-1:0] : dma_rd_idx[ProtoAw-1:0]),
      .wdata_i(clear ? '0 : dma_rd_data),
      .raddr_i(proto_raddr),
      .rdata_o(proto_rdata_b[b])
    );

    pqa_rowmem #(
      .AxiDataWidth(AxiDataWidth),
      .Bytes       (LutBytes),
      .NS          (LaneNS),
      .LaneBytes   (LutLaneBytes)
    ) u_lut_mem (
      .clk_i  (clk_i),
      .we_i   (clear || (we_lut && we_bank)),
      .waddr_i(clear ? clear_addr[LutAw-1:0] : dma_rd_idx[LutAw-1:0]),
      .wdata_i(clear ? '0 : dma_rd_data),
      .raddr_i(lut_raddr),
      .rdata_o(lut_rdata_b[b])
    );

    pqa_widemem #(
      .AxiDataWidth(AxiDataWidth),
      .OffW        (OffW),
      .Bytes       (BiasWords * BusBytes),
      .WideBytes   (BiasGroupBytes),
      .Align       (BiasAlign)
    ) u_bias_mem (
      .clk_i  (clk_i),
      .we_i   (clear || (we_bias && we_bank)),
      .woff_i (OffW'(clear ? clear_addr[BiasAw-1:0] : dma_rd_idx[BiasAw-1:0]) << $clog2(BusBytes)),
      .wdata_i(clear ? '0 : (BiasPortBytes*8)'(dma_rd_data)),
      .wbe_i  (BiasPortBytes'({BusBytes{1'b1}})),  // loads and the clear write whole words
      .roff_i (bias_roff),
      .rdata_o(bias_rdata_b[b])
    );
  end
  assign proto_rdata = proto_rdata_b[tbl_bank];
  assign lut_rdata   = lut_rdata_b[tbl_bank];
  assign bias_rdata  = bias_rdata_b[tbl_bank];

  // The act buffer: ActBanks banks, each with GatherRows copies for the encoder's read ports (copy 0 also
  // serves the vector unit), written together. A bank is written by the clear sweep, a `load` into it, or
  // the results of a `run`, `pool` or `add` whose dst is that bank; the compute unit reads bank cu_src
  // (stable through an instruction, so the registered read data are selected by it directly).
  logic [ActBanks*ActPortBytes*8-1:0]              act_rline_b;
  logic [ActBanks*GatherRows*GatherBytes*8-1:0]    enc_act_rdata_b;
  for (genvar ab = 0; ab < ActBanks; ab++) begin : gen_act_bank
    logic                      we_ld, we_res, we;
    logic [OffW-1:0]           woff;
    logic [ActPortBytes*8-1:0] wdata;
    logic [ActPortBytes-1:0]   wbe;
    assign we_ld  = we_act && (32'(load_bank) == ab);
    assign we_res = res_we && res_to_act && (32'(cu_dst) == pqa_pkg::TargetAct0 + ab);
    assign we     = clear || we_ld || we_res;
    always_comb begin
      if (clear || we_ld) begin  // loads and the clear write whole words
        woff  = OffW'(clear ? clear_addr[ActAw-1:0] : dma_rd_idx[ActAw-1:0]) << $clog2(BusBytes);
        wdata = clear ? '0 : (ActPortBytes*8)'(dma_rd_data);
        wbe   = ActPortBytes'({BusBytes{1'b1}});
      end else begin
        woff  = res_woff;
        wdata = res_wdata;
        wbe   = res_wbe;
      end
    end
    for (genvar r = 0; r < GatherRows; r++) begin : gen_copy
      logic [ActPortBytes*8-1:0] rline;
      pqa_widemem #(
        .AxiDataWidth(AxiDataWidth),
        .OffW        (OffW),
        .Bytes       (ActBytes),
        .WideBytes   (ActWideBytes)
      ) u_act_mem (
        .clk_i  (clk_i),
        .we_i   (we),
        .woff_i (woff),
        .wdata_i(wdata),
        .wbe_i  (wbe),
        .roff_i ((r == 0) ? act_roff : enc_act_roff[r*OffW +: OffW]),
        .rdata_o(rline)
      );
      assign enc_act_rdata_b[(ab*GatherRows + r)*GatherBytes*8 +: GatherBytes*8] = rline[GatherBytes*8-1:0];
      if (r == 0) begin : gen_port0
        assign act_rline_b[ab*ActPortBytes*8 +: ActPortBytes*8] = rline;
      end else begin : gen_portr
        logic unused_rline;  // port bytes past GatherBytes (the bus word is wider)
        assign unused_rline = ^rline;
      end
    end
  end
  assign act_rline     = act_rline_b[32'(cu_src)*ActPortBytes*8 +: ActPortBytes*8];
  assign enc_act_rdata = enc_act_rdata_b[32'(cu_src)*GatherRows*GatherBytes*8 +: GatherRows*GatherBytes*8];

  pqa_widemem #(
    .AxiDataWidth(AxiDataWidth),
    .OffW        (OffW),
    .Bytes       (OutBytes),
    .WideBytes   (LaneNOUT)
  ) u_out_mem (
    .clk_i  (clk_i),
    .we_i   (clear || we_out || (res_we && !res_to_act)),
    .woff_i (out_woff),
    .wdata_i(out_wdata),
    .wbe_i  (out_wbe),
    .roff_i (out_roff),
    .rdata_o(out_rline)
  );
  assign out_rdata = out_rline[AxiDataWidth-1:0];

  // A stamp record is PerfWords counters of CyclesW bits in whole bus words: beat i is word i of the record.
  localparam int StampBeats = (pqa_pkg::PerfWords * pqa_pkg::CyclesW + AxiDataWidth - 1) / AxiDataWidth;
  logic [StampBeats*AxiDataWidth-1:0] stamp_pad;
  assign stamp_pad = (StampBeats*AxiDataWidth)'(stamp_rec);
  always_comb begin
    stamp_word = '0;
    for (int i = 0; i < StampBeats; i++) begin
      if (dma_src_idx == BeatsW'(i)) begin
        stamp_word = stamp_pad[i*AxiDataWidth +: AxiDataWidth];
      end
    end
  end
  // registered, as the out buffer's read: the DMA takes a beat's data the cycle after its request
  logic [AxiDataWidth-1:0] stamp_word_q;
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      stamp_word_q <= '0;
    end else begin
      stamp_word_q <= stamp_word;
    end
  end
  assign dma_src_data = stamp_sel ? stamp_word_q : out_rdata;

  // ---------------------------------------------------------------------------------------------
  // Compute
  // ---------------------------------------------------------------------------------------------
  logic                           idx_we;
  logic [pqa_pkg::ShapeCW-1:0]    idx_group;  // subspace group
  logic [LaneNS*pqa_pkg::ShapeKW-1:0] idx_wdata;  // its NS prototype indices

  pqa_encoder #(
    .OffW        (OffW),
    .ActBytes    (ActBytes),
    .CMax        (CMax),
    .VMax        (VMax),
    .NS          (LaneNS),
    .NP          (LaneNP),
    .PL          (LanePL),
    .RowAw       (ProtoRowAw),
    .GatherPos   (GatherPos),
    .GatherRowsMax(GatherRowsMax),
    .GatherChGroups(GatherChGroups)
  ) u_encoder (
    .clk_i        (clk_i),
    .rst_ni       (rst_ni),
    .start_i      (enc_start),
    .n_i          (run_n),
    .metric_i     (metric),
    .k_i          (k),
    .v_i          (v),
    .c_i          (c),
    .d_i          (d),
    .col_base_i   ('0),
    .conv_i       (conv),
    .fmap_h_i     (fmap_h),
    .fmap_w_i     (fmap_w),
    .fmap_ch_i    (fmap_ch),
    .stride_i     (stride),
    .kh_i         (kh),
    .kw_i         (kw),
    .pad_t_i      (pad_t),
    .pad_l_i      (pad_l),
    .out_w_i      (out_w),
    .run_start_i  (run_start),
    .act_roff_o   (enc_act_roff),
    .act_rdata_i  (enc_act_rdata),
    .proto_raddr_o(proto_raddr),
    .proto_rdata_i(proto_rdata),
    .idx_credit_i (idx_credit),
    .idx_we_o     (idx_we),
    .idx_group_o  (idx_group),
    .idx_wdata_o  (idx_wdata),
    .done_o       (enc_done)
  );

  pqa_lookup #(
    .OffW     (OffW),
    .LutW     (LutW),
    .AccW     (AccW),
    .ActW     (ActW),
    .MMax     (MMax),
    .NS       (LaneNS),
    .NOUT     (LaneNOUT),
    .LaneBytes(LutLaneBytes),
    .LutRowAw (LutRowAw),
    .BiasBytes(BiasWords * BusBytes),
    .OutBytes (OutBytes)
  ) u_lookup (
    .clk_i       (clk_i),
    .rst_ni      (rst_ni),
    .start_i     (lk_start),
    .n_i         (run_n),
    .ostride_i   (run_ostride),
    .ooff_i      (run_ooff),
    .hold_i      (run_hold),
    .acc_i       (run_acc),
    .pack_i      (lut_pack),
    .k_i         (k),
    .c_i         (c),
    .m_i         (m),
    .mult_i      (mult),
    .shift_i     (shift),
    .relu_i      (relu),
    .unsigned_i  (act_unsigned),
    .bits_i      (act_bits),
    .idx_we_i    (idx_we),
    .idx_wdata_i (idx_wdata),
    .idx_credit_o(idx_credit),
    .lut_raddr_o (lut_raddr),
    .lut_rdata_i (lut_rdata),
    .bias_roff_o (bias_roff),
    .bias_rdata_i(bias_rdata[BiasGroupBytes*8-1:0]),
    .out_we_o    (lk_out_we),
    .out_woff_o  (lk_out_woff),
    .out_wdata_o (lk_out_wdata),
    .out_wbe_o   (lk_out_wbe),
    .done_o      (lk_done)
  );

  pqa_vec #(
    .ActW    (ActW),
    .ActBytes(ActBytes),
    .OutBytes(OutBytes),
    .VL      (VecLanes),
    .OffW    (OffW)
  ) u_vec (
    .clk_i      (clk_i),
    .rst_ni     (rst_ni),
    .start_i    (vec_start),
    .op_add_i   (vec_add),
    .fmap_h_i   (fmap_h),
    .fmap_w_i   (fmap_w),
    .fmap_ch_i  (fmap_ch),
    .n_i        (add_n),
    .ma_i       (add_ma),
    .mb_i       (add_mb),
    .mult_i     (mult),
    .shift_i    (shift),
    .relu_i     (relu),
    .unsigned_i (act_unsigned),
    .bits_i     (act_bits),
    .act_roff_o (vec_act_roff),
    .act_rdata_i(act_rline[VecLanes*ActW-1:0]),
    .out_roff_o (vec_out_roff),
    .out_rdata_i(out_rline[VecLanes*ActW-1:0]),
    .out_we_o   (vec_out_we),
    .out_woff_o (vec_out_woff),
    .out_wdata_o(vec_out_wdata),
    .out_wbe_o  (vec_out_wbe),
    .done_o     (vec_done)
  );

  logic unused_dma;
  logic unused_enc;  // the encoder's group number and done (the look-up's queue and done pace the run)
  assign unused_enc = ^{idx_group, enc_done};
  assign unused_dma = ^{dma_src_req, dma_rd_idx, dma_src_idx, out_rline, bias_rdata, act_rline};  // high index bits beyond a buffer; port bytes past the bus word / biases

endmodule

`default_nettype wire
