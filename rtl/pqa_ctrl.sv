// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Controller: fetches one instruction (one bus beat, the word that holds it) at a time from INSN_BASE upwards, decodes it (unknown
// opcode or a non-zero reserved bit: illegal_insn), checks it in the order of pqcompile.sim (fetch
// address, opcode, reserved bits; then alignment before limits for load/store/stamp; layer_fits at
// `run`, pool_fits at `pool`, the count and post_fits at `add`), dispatches it to the DMA, to the
// encoder / look-up units or to the vector unit (pool, add), and retires it. A `run` starts the encoder and
// the look-up unit once, in its first cycle, with its n columns; they stream the run's subspace groups
// (the encoder's indices reach the look-up unit through its index queue) and the run ends with the look-up
// unit's last write (docs/theory.md, "Streaming a run").
// It holds the layer state of sim._State (shape, quant, fmap and conv) and the units' copy of it, which
// follows it while the compute unit is idle and holds while it works: the next layer's set-up is decoded
// while the current one computes. An instruction in the fetch buffer is decoded in the cycle after the
// previous one's dispatch. Every unit is idle and no AXI transaction is outstanding when the controller
// stops on `end` or on an error.
// Performance counters (docs/isa.md, "Performance counters"; cleared by START): cycles, compute cycles
// (the states in which the encoder, the look-up unit or the vector unit work), and the bytes read and
// written over the AXI master (accepted beats x bus bytes, from pqa_top's AXI handshakes). A `stamp`
// samples them at its decode into a record of PerfWords counters, which the DMA writes in one command.
// Widths: instruction fields, registers and error codes from pqa_pkg (the spec); bus words, strobes and
// beat counts from AxiDataWidth (InsnW to 1024 bits).

`default_nettype none

module pqa_ctrl #(
  parameter int AxiAddrWidth = 32,
  parameter int AxiDataWidth = pqa_pkg::CfgDefaultAxiDataWidth,
  parameter int KMax       = 16,
  parameter int VMax       = 8,
  parameter int CMax       = 32,
  parameter int MMax       = 64,
  parameter int LutW       = 8,
  parameter int ActW       = 8,
  parameter int ProtoBytes = 4096,
  parameter int LutBytes   = 16384,
  parameter int BiasBytes  = 256,
  parameter int ActBytes   = 4096,
  parameter int OutBytes   = 4096,
  parameter int ClearAw    = 11,    // log2 of the words of the largest buffer
  parameter int NS         = 1,     // encoder lanes: subspaces, prototypes, elements per prototype row
  parameter int NP         = 1,
  parameter int PL         = 1,
  parameter int NOUT       = 1,     // look-up output lanes (table rows of NS lane words of NOUT entries)
  // Derived, do not override.
  parameter int BeatsW     = pqa_pkg::LoadNbytesW - $clog2(AxiDataWidth / 8) + 1  // bus words of a transfer
) (
  input  logic                             clk_i,
  input  logic                             rst_ni,
  // register file
  input  logic                             start_i,
  input  logic [pqa_pkg::RegDataW-1:0]     insn_base_i,
  output logic                             busy_o,
  output logic                             finish_o,       // single-cycle: the run stopped (err_code_o valid)
  output logic [pqa_pkg::ErrW-1:0]         err_code_o,
  output logic [pqa_pkg::RegDataW-1:0]     err_pc_o,
  output logic [pqa_pkg::RegDataW-1:0]     insn_count_o,
  output logic [pqa_pkg::CyclesW-1:0]      cycles_o,
  // buffer clear sweep after start (every buffer reads 0 until loaded or computed, as in the ISS)
  output logic                             clear_o,
  output logic [ClearAw-1:0]               clear_addr_o,
  // DMA
  output logic                             rd_cmd_valid_o,  // the DMA's read engine: fetches and loads
  output logic [AxiAddrWidth-1:0]          rd_cmd_addr_o,
  output logic [BeatsW-1:0]                rd_cmd_beats_o,
  input  logic                             rd_done_i,
  input  logic                             rd_err_i,
  output logic                             wr_cmd_valid_o,  // the DMA's write engine: stores and stamps
  output logic [AxiAddrWidth-1:0]          wr_cmd_addr_o,
  output logic [BeatsW-1:0]                wr_cmd_beats_o,
  output logic [AxiDataWidth/8-1:0]        wr_cmd_last_strb_o,
  input  logic                             wr_done_i,
  input  logic                             wr_err_i,
  input  logic                             dma_rd_valid_i,
  input  logic [AxiDataWidth-1:0]          dma_rd_data_i,
  output logic                             load_active_o,  // read beats go to buffer load_buf_o
  output logic [pqa_pkg::LoadBufW-1:0]     load_buf_o,
  output logic [pqa_pkg::LoadBankW-1:0]    load_bank_o,    // ... bank load_bank_o
  output logic [pqa_pkg::ShapeBankW-1:0]   tbl_bank_o,     // the table bank the running `run` reads
  output logic [pqa_pkg::RunSrcW-1:0]      cu_src_o,       // the act bank the compute unit reads
  output logic [pqa_pkg::RunDstW-1:0]      cu_dst_o,       // where it writes (enum target)
  output logic                             stamp_sel_o,    // write data is stamp_rec_o, not the out buffer
  output logic                             st_half_o,      // a store reads the out buffer from OutBytes/2
  output logic [pqa_pkg::PerfWords*pqa_pkg::CyclesW-1:0] stamp_rec_o,  // counter Perf<Name>: word Perf<Name>
  input  logic                             rd_beat_i,      // a read beat accepted on the AXI master
  input  logic                             wr_beat_i,      // a write beat accepted on the AXI master
  // layer state
  output logic [pqa_pkg::ShapeMetricW-1:0] metric_o,
  output logic                            pack_o,         // shape.pack: byte table entries, two rows a row
  output logic [pqa_pkg::ShapeKW-1:0]      k_o,
  output logic [pqa_pkg::ShapeVW-1:0]      v_o,
  output logic [pqa_pkg::ShapeCW-1:0]      c_o,
  output logic [pqa_pkg::ShapeDW-1:0]      d_o,
  output logic [pqa_pkg::ShapeMW-1:0]      m_o,
  output logic                             relu_o,
  output logic                             unsigned_o,
  output logic [pqa_pkg::QuantShiftW-1:0]  shift_o,
  output logic [pqa_pkg::QuantMultW-1:0]   mult_o,
  output logic [pqa_pkg::QuantBitsW-1:0]   bits_o,
  output logic [pqa_pkg::RunNW-1:0]        run_n_o,        // columns of the run
  output logic [pqa_pkg::RunOstrideW-1:0]  run_ostride_o,  // bytes from a column's outputs to the next (0: m)
  output logic [pqa_pkg::RunOoffW-1:0]     run_ooff_o,     // the byte of column 0's outputs
  output logic                             run_hold_o,     // dst = none: write nothing, hold the accumulators
  output logic                             run_acc_o,      // start from the held accumulators, not the bias
  output logic                             conv_o,
  output logic [pqa_pkg::FmapHW-1:0]       fmap_h_o,
  output logic [pqa_pkg::FmapWW-1:0]       fmap_w_o,
  output logic [pqa_pkg::FmapChW-1:0]      fmap_ch_o,
  output logic [pqa_pkg::ConvStrideW-1:0]  stride_o,
  output logic [pqa_pkg::ConvKhW-1:0]      kh_o,
  output logic [pqa_pkg::ConvKwW-1:0]      kw_o,
  output logic [pqa_pkg::ConvPadTW-1:0]    pad_t_o,
  output logic [pqa_pkg::ConvPadLW-1:0]    pad_l_o,
  output logic [pqa_pkg::ConvOutWW-1:0]    out_w_o,
  output logic [pqa_pkg::AddNW-1:0]        add_n_o,
  output logic [pqa_pkg::AddMaW-1:0]       add_ma_o,
  output logic [pqa_pkg::AddMbW-1:0]       add_mb_o,
  // compute units
  output logic                             enc_start_o,    // a run starts: the encoder streams its columns
  output logic                             lk_start_o,     // and the look-up unit too
  input  logic                             lk_done_i,      // the run's last output is written
  output logic                             run_start_o,    // a conv-mode run starts (address generator: pixel 0)
  output logic                             vec_start_o,
  output logic                             vec_add_o,      // the vector unit's operation: 0 pool, 1 add
  output logic                             vec_active_o,   // the vector unit owns the act / out read ports
  input  logic                             vec_done_i
);

  localparam int LutEntryBytes = pqa_pkg::elem_bytes(LutW);  // bytes of a table entry
  localparam int BusBytes      = AxiDataWidth / 8;
  localparam int BusAlign      = $clog2(BusBytes);            // byte-offset bits within a bus word
  localparam int InsnBytes     = pqa_pkg::InsnW / 8;
  localparam int InsnAlign     = $clog2(InsnBytes);           // byte-offset bits within an instruction
  // a stamp record: PerfWords counters of CyclesW bits, in whole bus words, the last strobed to its end
  localparam int StampBytes    = pqa_pkg::PerfWords * pqa_pkg::CyclesW / 8;
  localparam int StampBeats    = (StampBytes + BusBytes - 1) / BusBytes;
  localparam int StampTail     = StampBytes % BusBytes;       // bytes of the last beat (0: all)

  // The fetched beat is the bus word that holds the instruction at the pc. The controller keeps the last
  // one (the fetch buffer): an instruction in it is taken from there, without a fetch (stores into the
  // instruction stream are not supported, so it never goes stale during a run; a START empties it).
  logic [pqa_pkg::InsnW-1:0] fetch_word, buf_word;
  logic [AxiDataWidth-1:0]   fbuf_q;
  logic [pqa_pkg::RegDataW-1:0] fbuf_pc_q;  // an address in the buffered word
  logic                      fbuf_valid_q, fbuf_hit;
  // next_hit: the instruction after the one in decode is in the buffer too, and is decoded in the cycle after
  // this one's dispatch (one buffered instruction a cycle).
  logic [pqa_pkg::InsnW-1:0]    next_word;
  logic [pqa_pkg::RegDataW-1:0] next_pc;
  logic                         next_hit;
  assign fbuf_hit = fbuf_valid_q && (pc_q >> BusAlign) == (fbuf_pc_q >> BusAlign);
  assign next_pc  = pc_q + pqa_pkg::RegDataW'(InsnBytes);
  assign next_hit = fbuf_valid_q && (next_pc >> BusAlign) == (fbuf_pc_q >> BusAlign);
  if (BusBytes > InsnBytes) begin : gen_fetch_slot
    logic [BusAlign-InsnAlign-1:0] slot, next_slot;
    assign slot       = pc_q[BusAlign-1:InsnAlign];
    assign next_slot  = next_pc[BusAlign-1:InsnAlign];
    assign fetch_word = dma_rd_data_i[int'(slot)*pqa_pkg::InsnW +: pqa_pkg::InsnW];
    assign buf_word   = fbuf_q[int'(slot)*pqa_pkg::InsnW +: pqa_pkg::InsnW];
    assign next_word  = fbuf_q[int'(next_slot)*pqa_pkg::InsnW +: pqa_pkg::InsnW];
  end else begin : gen_fetch_word
    assign fetch_word = pqa_pkg::InsnW'(dma_rd_data_i);
    assign buf_word   = pqa_pkg::InsnW'(fbuf_q);
    assign next_word  = pqa_pkg::InsnW'(fbuf_q);  // (never used: next_hit is 0 with one instruction a word)
  end

  // load, store and stamp share one decode of `addr`, load and store one of `nbytes` (f_addr, f_nbytes
  // below): the spec must place those fields alike.
  if (pqa_pkg::StoreAddrLsb != pqa_pkg::LoadAddrLsb || pqa_pkg::StoreAddrW != pqa_pkg::LoadAddrW
      || pqa_pkg::StampAddrLsb != pqa_pkg::LoadAddrLsb || pqa_pkg::StampAddrW != pqa_pkg::LoadAddrW
      || pqa_pkg::StoreNbytesLsb != pqa_pkg::LoadNbytesLsb || pqa_pkg::StoreNbytesW != pqa_pkg::LoadNbytesW)
  begin : gen_field_check
`ifdef __ICARUS__
    initial $fatal(1, "pqa_ctrl: the spec places addr / nbytes of load, store and stamp differently");
`else
    $error("pqa_ctrl: the spec places addr / nbytes of load, store and stamp differently");
`endif
  end

  typedef enum logic [2:0] {
    CtlIdle,
    CtlClear,
    CtlFetch,
    CtlFetchWait,
    CtlDecode,
    CtlDrain,
    CtlFinish
  } ctl_state_e;

  ctl_state_e state_q, state_d;

  logic [pqa_pkg::RegDataW-1:0] pc_q;      // instruction address (INSN_BASE upwards)
  logic [pqa_pkg::InsnW-1:0]    insn_q;
  logic [pqa_pkg::CyclesW-1:0]  cycles_q;
  logic [pqa_pkg::RegDataW-1:0] count_q;   // instructions dispatched (the index of the one at the pc)
  logic [pqa_pkg::ErrW-1:0]     err_code_q;
  logic [pqa_pkg::RegDataW-1:0] err_pc_q;
  logic [pqa_pkg::RegDataW-1:0] err_count_q;
  logic [pqa_pkg::CyclesW-1:0]  compute_q, rd_bytes_q, wr_bytes_q;  // performance counters
  logic [pqa_pkg::CyclesW-1:0]  load_q, store_q, dep_q, fetch_q;
  logic [pqa_pkg::PerfWords*pqa_pkg::CyclesW-1:0] stamp_q;         // the record of the last stamp
  logic [pqa_pkg::RunNW-1:0]    n_q;            // columns of the run
  logic [pqa_pkg::RunOstrideW-1:0] ostride_q;   // its output stride (0: m) and offset
  logic [pqa_pkg::RunOoffW-1:0] ooff_q;
  logic                         hold_q, acc_q;  // the run's dst = none and acc
  logic                         held_q;         // a run with dst = none left its accumulators (sim._State.held)
  logic [pqa_pkg::ShapeMW-1:0]  held_m_q;       // its m
  logic [ClearAw-1:0]           clr_q;

  // The units and the instruction each works on (docs/theory.md, "Decoupled units"): the load unit (the
  // DMA's read engine, which also fetches), the store unit (the write engine: `store`, `stamp`) and the
  // compute unit (`run` on the encoder and the look-up unit, `pool` / `add` on the vector unit). Each holds
  // one instruction at a time; its count (index) and pc name it when it fails.
  logic                         ld_busy_q, st_busy_q, cu_busy_q;
  logic [pqa_pkg::LoadBufW-1:0] ld_buf_q;
  logic [pqa_pkg::LoadBankW-1:0] ld_bank_q;
  logic [pqa_pkg::RegDataW-1:0] ld_pc_q, ld_cnt_q, st_pc_q, st_cnt_q;
  logic                         st_stamp_q;     // the store unit writes a stamp record
  logic                         st_half_q;      // ... or its store reads the out buffer's second half
  logic                         cu_run_q;       // the compute unit runs a `run` (else `pool` / `add`)
  logic                         cu_go_q;        // its first cycle: start the units
  logic                         cu_bank_q;      // the table bank of its `run`
  logic [pqa_pkg::RunSrcW-1:0]  cu_src_q;       // the act bank it reads
  logic [pqa_pkg::RunDstW-1:0]  cu_dst_q;       // where it writes
  // The on-chip resources each unit's instruction reads and writes (bit Res<Name>; sim.resources)
  localparam int ResAct0 = 0;  // act bank 0, act bank 1 (ResAct0 + bank)
  localparam int ResOut0 = 2;  // the output buffer's halves (ResOut0 + half): every use counts as a write
  localparam int ResTbl0 = 4;  // table bank 0, table bank 1 (ResTbl0 + bank): proto, lut and bias together
  localparam int ResW    = 6;
  logic [ResW-1:0]              ld_wr_q, st_wr_q, cu_rd_q, cu_wr_q;
  // The external memory the store unit's instruction writes: bytes st_lo_q .. st_hi_q-1, its whole bus words
  // (a `load` of any of them waits for it: the read and write engines are independent AXI channels)
  localparam int MemAw = pqa_pkg::LoadAddrW + 1;  // byte addresses of transfers, one past the last included
  logic [MemAw-1:0]             st_lo_q, st_hi_q;
  logic                         fetch_busy_q;   // a fetch is in the read engine
  // errors met by the units, and the first one the decoder met (an instruction it refused)
  logic                         ld_err_q, st_err_q, dec_err_q;
  logic [pqa_pkg::ErrW-1:0]     dec_code_q;
  logic [pqa_pkg::RegDataW-1:0] dec_pc_q, dec_cnt_q;

  logic [pqa_pkg::ShapeMetricW-1:0] metric_q;
  logic                             conv_q, relu_q, unsigned_q;
  logic [pqa_pkg::ShapeBankW-1:0]   bank_q;
  logic                             pack_q;
  logic [pqa_pkg::ShapeKW-1:0]      k_q;
  logic [pqa_pkg::ShapeVW-1:0]      v_q;
  logic [pqa_pkg::ShapeCW-1:0]      c_q;
  logic [pqa_pkg::ShapeDW-1:0]      d_q;
  logic [pqa_pkg::ShapeMW-1:0]      m_q;
  logic [pqa_pkg::QuantMultW-1:0]   mult_q;
  logic [pqa_pkg::QuantShiftW-1:0]  shift_q;
  logic [pqa_pkg::QuantBitsW-1:0]   bits_q;
  logic [pqa_pkg::FmapHW-1:0]       fmap_h_q;
  logic [pqa_pkg::FmapWW-1:0]       fmap_w_q;
  logic [pqa_pkg::FmapChW-1:0]      fmap_ch_q;
  logic [pqa_pkg::ConvOutWW-1:0]    out_w_q;
  logic [pqa_pkg::ConvStrideW-1:0]  stride_q;
  logic [pqa_pkg::ConvKhW-1:0]      kh_q;
  logic [pqa_pkg::ConvKwW-1:0]      kw_q;
  logic [pqa_pkg::ConvPadTW-1:0]    pad_t_q;
  logic [pqa_pkg::ConvPadLW-1:0]    pad_l_q;
  // The layer state the units read (docs/theory.md, "Set-up while computing"): a copy of the registers
  // above that follows them while the compute unit is idle and holds while it works, so that `shape`,
  // `quant`, `fmap` and `conv` of the next layer are decoded while the current one computes.
  logic [pqa_pkg::ShapeMetricW-1:0] cur_metric_q;
  logic                             cur_conv_q, cur_relu_q, cur_unsigned_q, cur_pack_q;
  logic [pqa_pkg::ShapeKW-1:0]      cur_k_q;
  logic [pqa_pkg::ShapeVW-1:0]      cur_v_q;
  logic [pqa_pkg::ShapeCW-1:0]      cur_c_q;
  logic [pqa_pkg::ShapeDW-1:0]      cur_d_q;
  logic [pqa_pkg::ShapeMW-1:0]      cur_m_q;
  logic [pqa_pkg::QuantMultW-1:0]   cur_mult_q;
  logic [pqa_pkg::QuantShiftW-1:0]  cur_shift_q;
  logic [pqa_pkg::QuantBitsW-1:0]   cur_bits_q;
  logic [pqa_pkg::FmapHW-1:0]       cur_fmap_h_q;
  logic [pqa_pkg::FmapWW-1:0]       cur_fmap_w_q;
  logic [pqa_pkg::FmapChW-1:0]      cur_fmap_ch_q;
  logic [pqa_pkg::ConvOutWW-1:0]    cur_out_w_q;
  logic [pqa_pkg::ConvStrideW-1:0]  cur_stride_q;
  logic [pqa_pkg::ConvKhW-1:0]      cur_kh_q;
  logic [pqa_pkg::ConvKwW-1:0]      cur_kw_q;
  logic [pqa_pkg::ConvPadTW-1:0]    cur_pad_t_q;
  logic [pqa_pkg::ConvPadLW-1:0]    cur_pad_l_q;
  // Idle cycles still to wait, after a `shape`, `fmap` or `conv`, before a conv-mode `run` may start: the
  // copy takes one, and pqa_convgen registers its products of the geometry (and of the encoder's walk steps,
  // which depend on shape's v) in two more (GeoSettle).
  localparam int GeoSettle = 3;
  logic [1:0]                       geo_wait_q;
  logic                             vec_add_q;
  logic [pqa_pkg::AddNW-1:0]        add_n_q;
  logic [pqa_pkg::AddMaW-1:0]       add_ma_q;
  logic [pqa_pkg::AddMbW-1:0]       add_mb_q;

  // ---------------------------------------------------------------------------------------------
  // Decode
  // ---------------------------------------------------------------------------------------------
  logic [pqa_pkg::OpcodeW-1:0]     opcode;
  logic                            legal;
  logic [pqa_pkg::LoadAddrW-1:0]   f_addr;
  logic [pqa_pkg::LoadNbytesW-1:0] f_nbytes;
  logic [pqa_pkg::LoadBufW-1:0]    f_buf;
  logic [pqa_pkg::LoadBankW-1:0]   f_bank;
  logic [BeatsW-1:0]               f_beats;
  logic [BusBytes-1:0]             f_last_strb;
  logic [pqa_pkg::RunNW-1:0]       f_n;
  logic [pqa_pkg::RunSrcW-1:0]     f_src;
  logic [pqa_pkg::RunDstW-1:0]     f_dst;
  logic                            f_half;
  logic                            misaligned;

  assign opcode      = insn_q[pqa_pkg::OpcodeLsb +: pqa_pkg::OpcodeW];
  assign f_addr      = insn_q[pqa_pkg::LoadAddrLsb +: pqa_pkg::LoadAddrW];  // same field in store/stamp
  assign f_nbytes    = insn_q[pqa_pkg::LoadNbytesLsb +: pqa_pkg::LoadNbytesW];
  assign f_buf       = insn_q[pqa_pkg::LoadBufLsb +: pqa_pkg::LoadBufW];
  assign f_bank      = insn_q[pqa_pkg::LoadBankLsb +: pqa_pkg::LoadBankW];
  assign f_n         = insn_q[pqa_pkg::RunNLsb +: pqa_pkg::RunNW];
  assign f_src       = insn_q[pqa_pkg::RunSrcLsb +: pqa_pkg::RunSrcW];  // same fields in pool / add
  assign f_dst       = insn_q[pqa_pkg::RunDstLsb +: pqa_pkg::RunDstW];
  assign f_half      = (insn_q[pqa_pkg::StoreHalfLsb +: pqa_pkg::StoreHalfW] != '0);
  if (pqa_pkg::PoolSrcLsb != pqa_pkg::RunSrcLsb || pqa_pkg::AddSrcLsb != pqa_pkg::RunSrcLsb
      || pqa_pkg::PoolDstLsb != pqa_pkg::RunDstLsb || pqa_pkg::AddDstLsb != pqa_pkg::RunDstLsb
      || pqa_pkg::PoolSrcW != pqa_pkg::RunSrcW || pqa_pkg::AddSrcW != pqa_pkg::RunSrcW
      || pqa_pkg::PoolDstW != pqa_pkg::RunDstW || pqa_pkg::AddDstW != pqa_pkg::RunDstW) begin : gen_srcdst_check
`ifdef __ICARUS__
    initial $fatal(1,
`else
    $error(
`endif
      "pqa_ctrl: the spec's src / dst fields of run, pool and add differ");
  end
  assign f_beats     = BeatsW'(f_nbytes >> BusAlign) + BeatsW'(f_nbytes[BusAlign-1:0] != '0);
  assign f_last_strb = (f_nbytes[BusAlign-1:0] == '0) ? '1
                     : ((BusBytes'(1) << f_nbytes[BusAlign-1:0]) - BusBytes'(1));
  assign misaligned  = (f_addr[BusAlign-1:0] != '0);

  always_comb begin
    legal = 1'b0;
    unique case (opcode)
      pqa_pkg::OpcLoad:  legal = (insn_q & pqa_pkg::LoadRsvdMask) == '0;
      pqa_pkg::OpcStore: legal = (insn_q & pqa_pkg::StoreRsvdMask) == '0;
      pqa_pkg::OpcShape: legal = (insn_q & pqa_pkg::ShapeRsvdMask) == '0;
      pqa_pkg::OpcQuant: legal = (insn_q & pqa_pkg::QuantRsvdMask) == '0;
      pqa_pkg::OpcRun:   legal = (insn_q & pqa_pkg::RunRsvdMask) == '0;
      pqa_pkg::OpcStamp: legal = (insn_q & pqa_pkg::StampRsvdMask) == '0;
      pqa_pkg::OpcFmap:  legal = (insn_q & pqa_pkg::FmapRsvdMask) == '0;
      pqa_pkg::OpcConv:  legal = (insn_q & pqa_pkg::ConvRsvdMask) == '0;
      pqa_pkg::OpcPool:  legal = (insn_q & pqa_pkg::PoolRsvdMask) == '0;
      pqa_pkg::OpcAdd:   legal = (insn_q & pqa_pkg::AddRsvdMask) == '0;
      pqa_pkg::OpcEnd:   legal = (insn_q & pqa_pkg::EndRsvdMask) == '0;
      default:           legal = 1'b0;
    endcase
  end

  // The prototype buffer (pqa_protomem): rows of NS*NP*PL int8 elements every ProtoStride bytes, whole rows
  // only; a `run` reads ceil(c/NS) * ceil(k/NP) * ceil(v/PL) rows (HwConfig.proto_rows / proto_cap).
  localparam int ProtoStride = pqa_pkg::row_stride(NS * NP * PL, BusBytes);
  localparam int ProtoCap    = ProtoBytes / ProtoStride * ProtoStride;
  logic [pqa_pkg::ShapeCW:0] rows_g;
  logic [pqa_pkg::ShapeKW:0] rows_k;
  logic [pqa_pkg::ShapeVW:0] rows_e;
  assign rows_g = ({1'b0, c_q} + (pqa_pkg::ShapeCW + 1)'(NS - 1)) / (pqa_pkg::ShapeCW + 1)'(NS);
  assign rows_k = ({1'b0, k_q} + (pqa_pkg::ShapeKW + 1)'(NP - 1)) / (pqa_pkg::ShapeKW + 1)'(NP);
  assign rows_e = ({1'b0, v_q} + (pqa_pkg::ShapeVW + 1)'(PL - 1)) / (pqa_pkg::ShapeVW + 1)'(PL);

  // The table buffer (pqa_rowmem): rows of NS lane words (NOUT entries each, LutLane bytes) every LutStride
  // bytes, whole rows only; a `run` reads ceil(c/NS) * k * ceil(m/NOUT) rows, half of them rounded up with
  // shape.pack (byte entries, legal when LutW > 8; HwConfig.lut_rows / lut_cap / can_pack).
  localparam int LutLane   = pqa_pkg::row_stride(NOUT * LutEntryBytes, BusBytes);
  localparam int LutStride = pqa_pkg::row_stride(NS * LutLane, BusBytes);
  localparam int LutCap    = LutBytes / LutStride * LutStride;
  logic [pqa_pkg::ShapeMW:0] rows_m;
  assign rows_m = ({1'b0, m_q} + (pqa_pkg::ShapeMW + 1)'(NOUT - 1)) / (pqa_pkg::ShapeMW + 1)'(NOUT);
  logic [63:0] lut_rows;
  assign lut_rows = 64'(rows_g) * 64'(k_q) * 64'(rows_m);

  // Limits of `load` (buffer and length) and `store`: sim.run.
  logic [63:0] buf_words;
  logic [2:0]  buf_banks;
  logic        load_ok, store_ok;
  always_comb begin
    unique case (f_buf)
      pqa_pkg::LoadBufW'(pqa_pkg::BufferProto): begin
        buf_words = 64'(ProtoCap / BusBytes);
        buf_banks = 3'(pqa_pkg::BufProtoBanks);
      end
      pqa_pkg::LoadBufW'(pqa_pkg::BufferLut): begin
        buf_words = 64'(LutCap / BusBytes);
        buf_banks = 3'(pqa_pkg::BufLutBanks);
      end
      pqa_pkg::LoadBufW'(pqa_pkg::BufferBias): begin
        buf_words = 64'(BiasBytes / BusBytes);
        buf_banks = 3'(pqa_pkg::BufBiasBanks);
      end
      pqa_pkg::LoadBufW'(pqa_pkg::BufferAct): begin
        buf_words = 64'(ActBytes / BusBytes);
        buf_banks = 3'(pqa_pkg::BufActBanks);
      end
      pqa_pkg::LoadBufW'(pqa_pkg::BufferOut): begin
        buf_words = 64'(OutBytes / BusBytes);
        buf_banks = 3'(pqa_pkg::BufOutBanks);
      end
      default: begin
        buf_words = 64'd0;
        buf_banks = 3'd0;
      end
    endcase
  end
  assign load_ok  = (f_nbytes != '0) && (64'(f_beats) <= buf_words) && (3'(f_bank) < buf_banks);
  // `half`: from byte OutBytes/2, which must be whole bus words (sim: lo % bb)
  assign store_ok = (f_nbytes != '0) && (f_half ? (OutBytes >= 2 * BusBytes && 64'(f_nbytes) <= 64'(OutBytes / 2))
                                                : (64'(f_nbytes) <= 64'(OutBytes)));

  // sim.post_fits, sim.fmap_fits, sim.layer_fits (conv mode: no n*d bound, the fmap and the window
  // instead), sim.pool_fits and the limits of `add`, in 64-bit arithmetic.
  logic [63:0] k64, v64, c64, d64, m64, n64, an64, cv, h64, w64, ch64, kh64, kw64, os64, oo64, step64, oend64;
  logic        post_ok, fmap_ok, conv_ok, fits, pool_ok, add_ok, dst_ok, f_none, f_acc;
  logic [63:0] dst_bytes;  // the size of the destination of a `run` / `pool` / `add` (sim.target)
  always_comb begin
    dst_ok    = (64'(f_dst) == 64'(pqa_pkg::TargetOut))
             || (64'(f_dst) == 64'(pqa_pkg::TargetAct0) && f_src != '0)
             || (64'(f_dst) == 64'(pqa_pkg::TargetAct1) && f_src == '0);
    dst_bytes = (64'(f_dst) == 64'(pqa_pkg::TargetOut)) ? 64'(OutBytes) : 64'(ActBytes);
    k64     = 64'(k_q);
    v64     = 64'(v_q);
    c64     = 64'(c_q);
    d64     = 64'(d_q);
    m64     = 64'(m_q);
    n64     = 64'(f_n);
    os64    = 64'(insn_q[pqa_pkg::RunOstrideLsb +: pqa_pkg::RunOstrideW]);
    oo64    = 64'(insn_q[pqa_pkg::RunOoffLsb +: pqa_pkg::RunOoffW]);
    step64  = (os64 == 64'd0) ? m64 : os64;
    oend64  = oo64 + (n64 - 64'd1) * step64 + m64;  // past the run's last output byte (n >= 1 below)
    f_none  = (64'(f_dst) == 64'(pqa_pkg::TargetNone));
    f_acc   = (insn_q[pqa_pkg::RunAccLsb +: pqa_pkg::RunAccW] != '0);
    an64    = 64'(insn_q[pqa_pkg::AddNLsb +: pqa_pkg::AddNW]);
    h64     = 64'(fmap_h_q);
    w64     = 64'(fmap_w_q);
    ch64    = 64'(fmap_ch_q);
    kh64    = 64'(kh_q);
    kw64    = 64'(kw_q);
    cv      = c64 * v64;
    post_ok = (64'(shift_q) <= 64'(pqa_pkg::QuantShiftLimit))
           && (64'(bits_q) >= 64'd2) && (64'(bits_q) <= 64'(ActW))
           && !(unsigned_q && 64'(bits_q) >= 64'(ActW));
    fmap_ok = (h64 >= 64'd1) && (w64 >= 64'd1) && (ch64 >= 64'd1) && (h64 * w64 * ch64 <= 64'(ActBytes));
    conv_ok = fmap_ok && (stride_q != '0) && (kh64 >= 64'd1) && (kw64 >= 64'd1) && (out_w_q != '0)
           && (d64 == ch64 * kh64 * kw64);
    fits    = (!conv_q || conv_ok)
           && (k64 >= 64'd1) && (k64 <= 64'(KMax))
           && (v64 >= 64'd1) && (v64 <= 64'(VMax))
           && (c64 >= 64'd1) && (c64 <= 64'(CMax))
           && (m64 >= 64'd1) && (m64 <= 64'(MMax))
           && (d64 + v64 > cv) && (d64 <= cv)          // (c-1)*v < d <= c*v
           && (64'(rows_g) * 64'(rows_k) * 64'(rows_e) * 64'(ProtoStride) <= 64'(ProtoCap))
           && (!pack_q || LutEntryBytes > 1)
           && ((pack_q ? (lut_rows + 64'd1) >> 1 : lut_rows) * 64'(LutStride) <= 64'(LutCap))
           && (n64 >= 64'd1)
           && (conv_q || n64 * d64 <= 64'(ActBytes))
           && (os64 == 64'd0 || os64 >= m64)
           && (f_none || oend64 <= dst_bytes)  // n64 >= 1 above
           && (!(f_none || f_acc) || n64 == 64'd1)       // the accumulator chain: one column
           && (!f_acc || (held_q && held_m_q == m_q))  // ... and the held accumulators' m
           && post_ok && (dst_ok || f_none);
    pool_ok = fmap_ok && (ch64 <= dst_bytes) && post_ok && dst_ok;
    add_ok  = (an64 >= 64'd1) && (an64 <= 64'(ActBytes)) && (an64 <= 64'(OutBytes)) && post_ok && dst_ok;
  end

  // The compute unit is busy (counted in compute_cycles): a `run`, `pool` or `add` from the cycle after
  // its dispatch to the cycle its last unit reports done.
  logic computing;
  assign computing = cu_busy_q;
  logic cu_done;
  assign cu_done = cu_busy_q && !cu_go_q && (cu_run_q ? lk_done_i : vec_done_i);

  // ---------------------------------------------------------------------------------------------
  // Dependencies (docs/theory.md, "Decoupled units"): an instruction is dispatched, in program order,
  // once no unit works on an older instruction that it conflicts with; until then it waits in decode.
  // Each instruction reads and writes on-chip resources (the act banks, the output buffer, the table
  // banks: f_rd / f_wr, sim.resources); it conflicts with a unit's instruction that writes what it reads
  // or reads or writes what it writes (every use of the output buffer counts as a write: the vector unit
  // and the store unit share its read port).
  // - `load`: no conflict with the compute or the store unit (its own unit is free: see below).
  // - `run`, `pool`, `add`: the compute unit idle, no conflict with the load or the store unit.
  // - `store`: every unit idle (a store is the only instruction besides `stamp` with an effect outside
  //   the accelerator; it waits for every older one, so that an error stops the program exactly where
  //   the golden simulator stops it).
  // - `stamp`, `end`: every unit idle. `shape`, `quant`, `fmap`, `conv`: nothing (they write the layer
  //   state; the units read its copy, which holds while the compute unit works). A conv-mode `run` also
  //   waits GeoSettle idle cycles after the last `shape` / `fmap` / `conv` (the copy and pqa_convgen's
  //   products).
  // The read engine fetches the next instruction only when no `load` holds it; an instruction in the
  // fetch buffer needs no fetch, so a `load` also waits for its own unit.
  // ---------------------------------------------------------------------------------------------
  logic            f_is_table, ready;
  logic [ResW-1:0] f_rd, f_wr, f_dst_res, cu_check;
  assign f_is_table = (f_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferProto))
                   || (f_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferLut))
                   || (f_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferBias));
  // The output buffer is two resources, its halves: a `store` uses the halves its bytes lie in, a `run`
  // the halves of its outputs (bytes ooff .. oend64-1); a `load` into it, a `pool` into it and an `add` use
  // both (the DMA and the compute unit share its write port, the store and the vector unit its read port).
  localparam int OutHalf = OutBytes / 2;
  logic [63:0] st_lo64, st_hi64;
  assign st_lo64 = f_half ? 64'(OutHalf) : 64'd0;
  assign st_hi64 = st_lo64 + 64'(f_nbytes);
  always_comb begin
    f_dst_res = '0;
    if (64'(f_dst) == 64'(pqa_pkg::TargetAct0)) begin
      f_dst_res[ResAct0] = 1'b1;
    end else if (64'(f_dst) == 64'(pqa_pkg::TargetAct1)) begin
      f_dst_res[ResAct0 + 1] = 1'b1;
    end else if (opcode == pqa_pkg::OpcRun && 64'(f_dst) == 64'(pqa_pkg::TargetOut)) begin
      f_dst_res[ResOut0]     = oo64 < 64'(OutHalf);
      f_dst_res[ResOut0 + 1] = oend64 > 64'(OutHalf);
    end else begin
      f_dst_res[ResOut0 +: 2] = 2'b11;
    end
    f_rd = '0;
    f_wr = '0;
    unique case (opcode)
      pqa_pkg::OpcLoad: begin
        if (f_is_table) begin
          f_wr[ResTbl0 + 32'(f_bank)] = 1'b1;
        end else if (f_buf == pqa_pkg::LoadBufW'(pqa_pkg::BufferOut)) begin
          f_wr[ResOut0 +: 2] = 2'b11;
        end else begin
          f_wr[ResAct0 + 32'(f_bank)] = 1'b1;
        end
      end
      pqa_pkg::OpcStore: begin
        f_wr[ResOut0]     = st_lo64 < 64'(OutHalf);
        f_wr[ResOut0 + 1] = st_hi64 > 64'(OutHalf);
      end
      pqa_pkg::OpcRun, pqa_pkg::OpcPool, pqa_pkg::OpcAdd: begin
        f_rd[ResAct0 + 32'(f_src)] = 1'b1;
        if (opcode == pqa_pkg::OpcRun) begin
          f_rd[ResTbl0 + 32'(bank_q)] = 1'b1;
        end
        f_wr = f_dst_res;
        if (opcode == pqa_pkg::OpcAdd) begin
          f_wr[ResOut0 +: 2] = 2'b11;
        end
      end
      default: ;
    endcase
  end
  // what a load is checked against in the compute unit's instruction
`ifdef PQA_MUTANT_NODEP
  // deliberate bug: a table load does not wait for the `run` that reads its bank
  assign cu_check = cu_rd_q & ~(ResW'(3) << ResTbl0) | cu_wr_q;
`else
  assign cu_check = cu_rd_q | cu_wr_q;
`endif
  logic ld_conflict, st_conflict, cu_conflict, mem_conflict;
  assign ld_conflict = ld_busy_q && ((f_wr & ld_wr_q) != '0 || (f_rd & ld_wr_q) != '0);
  assign st_conflict = st_busy_q && ((f_wr & st_wr_q) != '0 || (f_rd & st_wr_q) != '0);
  // The external memory of a transfer: the bus words from `addr` on (a stamp: its record's words). A `load`
  // whose words overlap the store unit's `store` or `stamp` waits for it (a read after a write of the same
  // memory; the write engine's bursts may still be in flight).
  logic [MemAw-1:0] f_lo, f_hi;
  assign f_lo = MemAw'(f_addr);
  assign f_hi = f_lo + (MemAw'(opcode == pqa_pkg::OpcStamp ? BeatsW'(StampBeats) : f_beats) << BusAlign);
`ifdef PQA_MUTANT_NOMEM
  // deliberate bug: a load does not wait for an older store of the memory it reads
  assign mem_conflict = 1'b0;
`else
  assign mem_conflict = st_busy_q && (f_lo < st_hi_q) && (st_lo_q < f_hi);
`endif
  assign cu_conflict = cu_busy_q && ((f_wr & cu_check) != '0 || (f_rd & cu_wr_q) != '0);
  always_comb begin
    unique case (opcode)
      pqa_pkg::OpcLoad: ready = !ld_busy_q && !cu_conflict && !st_conflict && !mem_conflict;
      pqa_pkg::OpcRun: ready = !cu_busy_q && !st_conflict && !ld_conflict && !(conv_q && geo_wait_q != '0);
      pqa_pkg::OpcPool, pqa_pkg::OpcAdd: ready = !cu_busy_q && !st_conflict && !ld_conflict;
      pqa_pkg::OpcStore, pqa_pkg::OpcStamp, pqa_pkg::OpcEnd: ready = !cu_busy_q && !st_busy_q && !ld_busy_q;
      default: ready = 1'b1;  // shape, quant, fmap, conv: the units read the copy (cur_*_q)
    endcase
  end

  // A unit's error, or one the decoder met: stop dispatching, let every unit finish, then report the
  // oldest failing instruction (the golden simulator's stop).
  logic unit_err, ld_fail, st_fail;
  assign ld_fail  = ld_busy_q && rd_done_i && rd_err_i;
  assign st_fail  = st_busy_q && wr_done_i && wr_err_i;
  assign unit_err = ld_err_q || st_err_q || ld_fail || st_fail;

  logic all_idle;
  assign all_idle = !ld_busy_q && !st_busy_q && !cu_busy_q && !fetch_busy_q;

  // ---------------------------------------------------------------------------------------------
  // State machine
  // ---------------------------------------------------------------------------------------------
  logic                     fail;       // the decoder refuses the instruction at pc_q with fail_code
  logic                     dep_wait;   // the instruction in decode waits for an older one (dep_cycles)
  logic [pqa_pkg::ErrW-1:0] fail_code;
  logic                     dispatch;   // the instruction at pc_q goes to its unit (or sets layer state)

  always_comb begin
    state_d            = state_q;
    fail               = 1'b0;
    fail_code          = pqa_pkg::ErrNone;
    dispatch           = 1'b0;
    dep_wait           = 1'b0;
    rd_cmd_valid_o     = 1'b0;
    rd_cmd_addr_o      = AxiAddrWidth'(f_addr);
    rd_cmd_beats_o     = f_beats;
    wr_cmd_valid_o     = 1'b0;
    wr_cmd_addr_o      = AxiAddrWidth'(f_addr);
    wr_cmd_beats_o     = f_beats;
    wr_cmd_last_strb_o = f_last_strb;
    unique case (state_q)
      CtlIdle: begin
        if (start_i) begin
          state_d = CtlClear;
        end
      end
      CtlClear: begin
        if (clr_q == '1) begin
          state_d = CtlFetch;
        end
      end
      CtlFetch: begin
        if (unit_err) begin
          state_d = CtlDrain;
        end else if (pc_q[InsnAlign-1:0] != '0) begin  // a misaligned INSN_BASE (the pc advances by whole instructions)
          fail      = 1'b1;
          fail_code = pqa_pkg::ErrAlign;
          state_d   = CtlDrain;
        end else if (fbuf_hit) begin  // in the buffered bus word: no fetch
          state_d = CtlDecode;
        end else if (!ld_busy_q) begin  // the read engine is free
          rd_cmd_valid_o = 1'b1;
          rd_cmd_addr_o  = AxiAddrWidth'(pc_q) & ~AxiAddrWidth'(BusBytes - 1);  // the word that holds it
          rd_cmd_beats_o = BeatsW'(1);
          state_d        = CtlFetchWait;
        end
      end
      CtlFetchWait: begin
        if (rd_done_i) begin
          if (rd_err_i) begin
            fail      = 1'b1;
            fail_code = pqa_pkg::ErrBus;
            state_d   = CtlDrain;
          end else begin
            if (unit_err) begin
              state_d = CtlDrain;
            end else begin
              state_d = CtlDecode;
            end
          end
        end
      end
      CtlDecode: begin
        if (unit_err) begin
          state_d = CtlDrain;
        end else if (!legal) begin
          fail      = 1'b1;
          fail_code = pqa_pkg::ErrIllegalInsn;
          state_d   = CtlDrain;
        end else if ((opcode == pqa_pkg::OpcLoad || opcode == pqa_pkg::OpcStore || opcode == pqa_pkg::OpcStamp)
                     && misaligned) begin
          fail      = 1'b1;
          fail_code = pqa_pkg::ErrAlign;
          state_d   = CtlDrain;
        end else if ((opcode == pqa_pkg::OpcLoad && !load_ok) || (opcode == pqa_pkg::OpcStore && !store_ok)
                     || (opcode == pqa_pkg::OpcRun && !fits) || (opcode == pqa_pkg::OpcPool && !pool_ok)
                     || (opcode == pqa_pkg::OpcAdd && !add_ok)) begin
          fail      = 1'b1;
          fail_code = pqa_pkg::ErrLimit;
          state_d   = CtlDrain;
        end else if (!ready) begin
          dep_wait = 1'b1;
        end else begin
          dispatch = 1'b1;
          unique case (opcode)
            pqa_pkg::OpcLoad: rd_cmd_valid_o = 1'b1;
            pqa_pkg::OpcStore: wr_cmd_valid_o = 1'b1;
            pqa_pkg::OpcStamp: begin
              wr_cmd_valid_o     = 1'b1;
              wr_cmd_beats_o     = BeatsW'(StampBeats);
              wr_cmd_last_strb_o = (StampTail == 0) ? '1 : BusBytes'((1 << StampTail) - 1);
            end
            default: ;
          endcase
          if (opcode == pqa_pkg::OpcEnd) begin
            state_d = CtlFinish;
          end else if (next_hit) begin
            state_d = CtlDecode;  // the next instruction from the fetch buffer, no fetch state
          end else begin
            state_d = CtlFetch;
          end
        end
      end
      CtlDrain: begin
        if (all_idle && !ld_fail && !st_fail) begin
          state_d = CtlFinish;
        end
      end
      CtlFinish: state_d = CtlIdle;
      default:   state_d = CtlIdle;
    endcase
  end

  // The oldest failing instruction: the decoder's (or the fetch's) and the units' errors by count.
  logic                         pick_ld, pick_st;
  always_comb begin
    pick_ld = ld_err_q && (!dec_err_q || ld_cnt_q < dec_cnt_q) && (!st_err_q || ld_cnt_q < st_cnt_q);
    pick_st = st_err_q && !pick_ld && (!dec_err_q || st_cnt_q < dec_cnt_q);
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q      <= CtlIdle;
      pc_q         <= '0;
      insn_q       <= '0;
      fbuf_q       <= '0;
      fbuf_pc_q    <= '0;
      fbuf_valid_q <= 1'b0;
      cycles_q     <= '0;
      compute_q    <= '0;
      rd_bytes_q   <= '0;
      wr_bytes_q   <= '0;
      load_q       <= '0;
      store_q      <= '0;
      dep_q        <= '0;
      fetch_q      <= '0;
      count_q      <= '0;
      err_code_q   <= pqa_pkg::ErrNone;
      err_pc_q     <= '0;
      err_count_q  <= '0;
      stamp_q      <= '0;
      n_q          <= '0;
      ostride_q    <= '0;
      ooff_q       <= '0;
      hold_q       <= 1'b0;
      acc_q        <= 1'b0;
      held_q       <= 1'b0;
      held_m_q     <= '0;
      clr_q        <= '0;
      ld_busy_q    <= 1'b0;
      st_busy_q    <= 1'b0;
      cu_busy_q    <= 1'b0;
      ld_buf_q     <= '0;
      ld_bank_q    <= '0;
      ld_pc_q      <= '0;
      ld_cnt_q     <= '0;
      st_pc_q      <= '0;
      st_cnt_q     <= '0;
      st_stamp_q   <= 1'b0;
      st_half_q    <= 1'b0;
      cu_run_q     <= 1'b0;
      cu_go_q      <= 1'b0;
      cu_bank_q    <= 1'b0;
      cu_src_q     <= '0;
      cu_dst_q     <= '0;
      cu_rd_q      <= '0;
      cu_wr_q      <= '0;
      ld_wr_q      <= '0;
      st_wr_q      <= '0;
      st_lo_q      <= '0;
      st_hi_q      <= '0;
      fetch_busy_q <= 1'b0;
      ld_err_q     <= 1'b0;
      st_err_q     <= 1'b0;
      dec_err_q    <= 1'b0;
      dec_code_q   <= pqa_pkg::ErrNone;
      dec_pc_q     <= '0;
      dec_cnt_q    <= '0;
      metric_q     <= '0;
      pack_q       <= 1'b0;
      conv_q       <= 1'b0;
      bank_q       <= '0;
      relu_q       <= 1'b0;
      unsigned_q   <= 1'b0;
      k_q          <= '0;
      v_q          <= '0;
      c_q          <= '0;
      d_q          <= '0;
      m_q          <= '0;
      mult_q       <= '0;
      shift_q      <= '0;
      bits_q       <= '0;
      fmap_h_q     <= '0;
      fmap_w_q     <= '0;
      fmap_ch_q    <= '0;
      stride_q     <= '0;
      kh_q         <= '0;
      kw_q         <= '0;
      pad_t_q      <= '0;
      pad_l_q      <= '0;
      out_w_q      <= '0;
      cur_metric_q   <= '0;
      cur_conv_q     <= 1'b0;
      cur_pack_q     <= 1'b0;
      cur_relu_q     <= 1'b0;
      cur_unsigned_q <= 1'b0;
      cur_k_q        <= '0;
      cur_v_q        <= '0;
      cur_c_q        <= '0;
      cur_d_q        <= '0;
      cur_m_q        <= '0;
      cur_mult_q     <= '0;
      cur_shift_q    <= '0;
      cur_bits_q     <= '0;
      cur_fmap_h_q   <= '0;
      cur_fmap_w_q   <= '0;
      cur_fmap_ch_q  <= '0;
      cur_out_w_q    <= '0;
      cur_stride_q   <= '0;
      cur_kh_q       <= '0;
      cur_kw_q       <= '0;
      cur_pad_t_q    <= '0;
      cur_pad_l_q    <= '0;
      geo_wait_q     <= '0;
      vec_add_q    <= 1'b0;
      add_n_q      <= '0;
      add_ma_q     <= '0;
      add_mb_q     <= '0;
    end else begin
      state_q <= state_d;
      if (state_q != CtlIdle) begin
        cycles_q <= cycles_q + pqa_pkg::CyclesW'(1);
      end
      if (computing) begin
        compute_q <= compute_q + pqa_pkg::CyclesW'(1);
      end
      if (rd_beat_i) begin
        rd_bytes_q <= rd_bytes_q + pqa_pkg::CyclesW'(BusBytes);
      end
      if (wr_beat_i) begin
        wr_bytes_q <= wr_bytes_q + pqa_pkg::CyclesW'(BusBytes);
      end
      if (ld_busy_q) begin
        load_q <= load_q + pqa_pkg::CyclesW'(1);
      end
      if (st_busy_q) begin
        store_q <= store_q + pqa_pkg::CyclesW'(1);
      end
      if (dep_wait) begin
        dep_q <= dep_q + pqa_pkg::CyclesW'(1);
      end
      if (state_q == CtlFetch || state_q == CtlFetchWait) begin
        fetch_q <= fetch_q + pqa_pkg::CyclesW'(1);
      end
      // the units finish
      if (ld_busy_q && rd_done_i) begin
        ld_busy_q <= 1'b0;
        if (rd_err_i) begin
          ld_err_q <= 1'b1;
        end
      end
      if (fetch_busy_q && rd_done_i) begin
        fetch_busy_q <= 1'b0;
      end
      if (st_busy_q && wr_done_i) begin
        st_busy_q <= 1'b0;
        if (wr_err_i) begin
          st_err_q <= 1'b1;
        end
      end
      cu_go_q <= 1'b0;
      if (cu_done) begin
        cu_busy_q <= 1'b0;
      end
      if (!cu_busy_q && geo_wait_q != '0) begin
        geo_wait_q <= geo_wait_q - 2'd1;
      end
      if (!cu_busy_q) begin  // the units' copy of the layer state follows it while the compute unit is idle
        cur_metric_q   <= metric_q;
        cur_conv_q     <= conv_q;
        cur_pack_q     <= pack_q;
        cur_relu_q     <= relu_q;
        cur_unsigned_q <= unsigned_q;
        cur_k_q        <= k_q;
        cur_v_q        <= v_q;
        cur_c_q        <= c_q;
        cur_d_q        <= d_q;
        cur_m_q        <= m_q;
        cur_mult_q     <= mult_q;
        cur_shift_q    <= shift_q;
        cur_bits_q     <= bits_q;
        cur_fmap_h_q   <= fmap_h_q;
        cur_fmap_w_q   <= fmap_w_q;
        cur_fmap_ch_q  <= fmap_ch_q;
        cur_out_w_q    <= out_w_q;
        cur_stride_q   <= stride_q;
        cur_kh_q       <= kh_q;
        cur_kw_q       <= kw_q;
        cur_pad_t_q    <= pad_t_q;
        cur_pad_l_q    <= pad_l_q;
      end
      if (fail) begin
        dec_err_q  <= 1'b1;
        dec_code_q <= fail_code;
        dec_pc_q   <= pc_q;
        dec_cnt_q  <= count_q;
      end
      unique case (state_q)
        CtlIdle: begin
          if (start_i) begin
            // A new run starts from the reset state of sim._State.
            pc_q        <= insn_base_i;
            fbuf_valid_q <= 1'b0;
            clr_q       <= '0;
            cycles_q    <= '0;
            compute_q   <= '0;
            rd_bytes_q  <= '0;
            wr_bytes_q  <= '0;
            load_q      <= '0;
            store_q     <= '0;
            dep_q       <= '0;
            fetch_q     <= '0;
            count_q     <= '0;
            held_q      <= 1'b0;
            err_code_q  <= pqa_pkg::ErrNone;
            err_pc_q    <= '0;
            err_count_q <= '0;
            ld_err_q    <= 1'b0;
            st_err_q    <= 1'b0;
            dec_err_q   <= 1'b0;
            metric_q    <= '0;
            conv_q      <= 1'b0;
            bank_q      <= '0;
            pack_q      <= 1'b0;
            relu_q      <= 1'b0;
            unsigned_q  <= 1'b0;
            k_q         <= '0;
            v_q         <= '0;
            c_q         <= '0;
            d_q         <= '0;
            m_q         <= '0;
            mult_q      <= '0;
            shift_q     <= '0;
            bits_q      <= '0;
            fmap_h_q    <= '0;
            fmap_w_q    <= '0;
            fmap_ch_q   <= '0;
            stride_q    <= '0;
            kh_q        <= '0;
            kw_q        <= '0;
            pad_t_q     <= '0;
            pad_l_q     <= '0;
            out_w_q     <= '0;
          end
        end
        CtlClear: clr_q <= clr_q + 1'b1;
        CtlFetch: begin
          if (rd_cmd_valid_o) begin
            fetch_busy_q <= 1'b1;
          end
          if (state_d == CtlDecode) begin
            insn_q <= buf_word;
          end
        end
        CtlFetchWait: begin
          if (dma_rd_valid_i) begin
            insn_q       <= fetch_word;
            fbuf_q       <= dma_rd_data_i;
            fbuf_pc_q    <= pc_q;
            fbuf_valid_q <= 1'b1;
          end
          if (rd_done_i && rd_err_i) begin
            fbuf_valid_q <= 1'b0;
          end
        end
        CtlDecode: begin
          if (dispatch) begin
            pc_q    <= next_pc;
            if (state_d == CtlDecode) begin
              insn_q <= next_word;
            end
            count_q <= count_q + pqa_pkg::RegDataW'(1);
            unique case (opcode)
              pqa_pkg::OpcLoad: begin
                ld_busy_q <= 1'b1;
                ld_buf_q  <= f_buf;
                ld_bank_q <= f_bank;
                ld_wr_q   <= f_wr;
                ld_pc_q   <= pc_q;
                ld_cnt_q  <= count_q;
              end
              pqa_pkg::OpcStore, pqa_pkg::OpcStamp: begin
                st_busy_q  <= 1'b1;
                st_stamp_q <= (opcode == pqa_pkg::OpcStamp);
                st_half_q  <= (opcode == pqa_pkg::OpcStore) && f_half;
                st_wr_q    <= f_wr;
                st_lo_q    <= f_lo;
                st_hi_q    <= f_hi;
                st_pc_q    <= pc_q;
                st_cnt_q   <= count_q;
                if (opcode == pqa_pkg::OpcStamp) begin
                  stamp_q[pqa_pkg::PerfCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]        <= cycles_q;
                  stamp_q[pqa_pkg::PerfComputeCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW] <= compute_q;
                  stamp_q[pqa_pkg::PerfRdBytes*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]       <= rd_bytes_q;
                  stamp_q[pqa_pkg::PerfWrBytes*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]       <= wr_bytes_q;
                  stamp_q[pqa_pkg::PerfLoadCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]    <= load_q;
                  stamp_q[pqa_pkg::PerfStoreCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]   <= store_q;
                  stamp_q[pqa_pkg::PerfDepCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]     <= dep_q;
                  stamp_q[pqa_pkg::PerfFetchCycles*pqa_pkg::CyclesW +: pqa_pkg::CyclesW]   <= fetch_q;
                end
              end
              pqa_pkg::OpcShape: begin
                geo_wait_q <= 2'(GeoSettle);
                metric_q <= insn_q[pqa_pkg::ShapeMetricLsb +: pqa_pkg::ShapeMetricW];
                conv_q   <= insn_q[pqa_pkg::ShapeConvLsb +: pqa_pkg::ShapeConvW];
                bank_q   <= insn_q[pqa_pkg::ShapeBankLsb +: pqa_pkg::ShapeBankW];
                pack_q   <= insn_q[pqa_pkg::ShapePackLsb +: pqa_pkg::ShapePackW] != '0;
                k_q      <= insn_q[pqa_pkg::ShapeKLsb +: pqa_pkg::ShapeKW];
                v_q      <= insn_q[pqa_pkg::ShapeVLsb +: pqa_pkg::ShapeVW];
                c_q      <= insn_q[pqa_pkg::ShapeCLsb +: pqa_pkg::ShapeCW];
                d_q      <= insn_q[pqa_pkg::ShapeDLsb +: pqa_pkg::ShapeDW];
                m_q      <= insn_q[pqa_pkg::ShapeMLsb +: pqa_pkg::ShapeMW];
              end
              pqa_pkg::OpcQuant: begin
                relu_q     <= insn_q[pqa_pkg::QuantReluLsb +: pqa_pkg::QuantReluW];
                unsigned_q <= insn_q[pqa_pkg::QuantUnsignedLsb +: pqa_pkg::QuantUnsignedW];
                shift_q    <= insn_q[pqa_pkg::QuantShiftLsb +: pqa_pkg::QuantShiftW];
                mult_q     <= insn_q[pqa_pkg::QuantMultLsb +: pqa_pkg::QuantMultW];
                bits_q     <= insn_q[pqa_pkg::QuantBitsLsb +: pqa_pkg::QuantBitsW];
              end
              pqa_pkg::OpcFmap: begin
                geo_wait_q <= 2'(GeoSettle);
                fmap_h_q  <= insn_q[pqa_pkg::FmapHLsb +: pqa_pkg::FmapHW];
                fmap_w_q  <= insn_q[pqa_pkg::FmapWLsb +: pqa_pkg::FmapWW];
                fmap_ch_q <= insn_q[pqa_pkg::FmapChLsb +: pqa_pkg::FmapChW];
              end
              pqa_pkg::OpcConv: begin
                geo_wait_q <= 2'(GeoSettle);
                stride_q <= insn_q[pqa_pkg::ConvStrideLsb +: pqa_pkg::ConvStrideW];
                kh_q     <= insn_q[pqa_pkg::ConvKhLsb +: pqa_pkg::ConvKhW];
                kw_q     <= insn_q[pqa_pkg::ConvKwLsb +: pqa_pkg::ConvKwW];
                pad_t_q  <= insn_q[pqa_pkg::ConvPadTLsb +: pqa_pkg::ConvPadTW];
                pad_l_q  <= insn_q[pqa_pkg::ConvPadLLsb +: pqa_pkg::ConvPadLW];
                out_w_q  <= insn_q[pqa_pkg::ConvOutWLsb +: pqa_pkg::ConvOutWW];
              end
              pqa_pkg::OpcRun, pqa_pkg::OpcPool, pqa_pkg::OpcAdd: begin
                cu_busy_q <= 1'b1;
                cu_go_q   <= 1'b1;
                cu_run_q  <= (opcode == pqa_pkg::OpcRun);
                cu_bank_q <= bank_q;
                cu_src_q  <= f_src;
                cu_dst_q  <= f_dst;
                cu_rd_q   <= f_rd;
                cu_wr_q   <= f_wr;
                vec_add_q <= (opcode == pqa_pkg::OpcAdd);
                n_q       <= f_n;
                ostride_q <= insn_q[pqa_pkg::RunOstrideLsb +: pqa_pkg::RunOstrideW];
                ooff_q    <= insn_q[pqa_pkg::RunOoffLsb +: pqa_pkg::RunOoffW];
                hold_q    <= f_none && (opcode == pqa_pkg::OpcRun);
                acc_q     <= f_acc && (opcode == pqa_pkg::OpcRun);
                if (opcode == pqa_pkg::OpcRun) begin
                  held_q   <= f_none;
                  held_m_q <= m_q;
                end
                add_n_q   <= insn_q[pqa_pkg::AddNLsb +: pqa_pkg::AddNW];
                add_ma_q  <= insn_q[pqa_pkg::AddMaLsb +: pqa_pkg::AddMaW];
                add_mb_q  <= insn_q[pqa_pkg::AddMbLsb +: pqa_pkg::AddMbW];
              end
              default: ;  // end
            endcase
          end
        end
        CtlDrain: begin
          if (all_idle && !ld_fail && !st_fail) begin
            // every unit has finished: report the oldest failing instruction
            if (pick_ld) begin
              err_code_q  <= pqa_pkg::ErrBus;
              err_pc_q    <= ld_pc_q;
              err_count_q <= ld_cnt_q;
            end else if (pick_st) begin
              err_code_q  <= pqa_pkg::ErrBus;
              err_pc_q    <= st_pc_q;
              err_count_q <= st_cnt_q;
            end else begin
              err_code_q  <= dec_code_q;
              err_pc_q    <= dec_pc_q;
              err_count_q <= dec_cnt_q;
            end
          end
        end
        default: ;
      endcase
    end
  end

  assign busy_o        = (state_q != CtlIdle);
  assign clear_o       = (state_q == CtlClear);
  assign clear_addr_o  = clr_q;
  assign enc_start_o   = cu_busy_q && cu_go_q && cu_run_q;
  assign lk_start_o    = cu_busy_q && cu_go_q && cu_run_q;
  assign run_n_o       = n_q;
  assign run_ostride_o = ostride_q;
  assign run_ooff_o    = ooff_q;
  assign run_hold_o    = hold_q;
  assign run_acc_o     = acc_q;
  assign run_start_o   = dispatch && (opcode == pqa_pkg::OpcRun) && conv_q;
  assign vec_start_o   = cu_busy_q && cu_go_q && !cu_run_q;
  assign vec_add_o     = vec_add_q;
  assign vec_active_o  = cu_busy_q && !cu_run_q;
  assign finish_o      = (state_q == CtlFinish);
  assign err_code_o    = err_code_q;
  assign err_pc_o      = err_pc_q;
  // INSN_COUNT: the instructions retired, all of them after `end`, those before the failing one after an error
  assign insn_count_o  = (err_code_q != pqa_pkg::ErrNone) ? err_count_q : count_q;
  assign cycles_o      = cycles_q;
  assign load_active_o = ld_busy_q;
  assign load_buf_o    = ld_buf_q;
  assign load_bank_o   = ld_bank_q;
  assign tbl_bank_o    = cu_bank_q;
  assign cu_src_o      = cu_src_q;
  assign cu_dst_o      = cu_dst_q;
  assign stamp_sel_o   = st_busy_q && st_stamp_q;
  assign st_half_o     = st_half_q;
  assign stamp_rec_o   = stamp_q;
  assign metric_o      = cur_metric_q;
  assign pack_o        = cur_pack_q;
  assign k_o           = cur_k_q;
  assign v_o           = cur_v_q;
  assign c_o           = cur_c_q;
  assign d_o           = cur_d_q;
  assign m_o           = cur_m_q;
  assign relu_o        = cur_relu_q;
  assign unsigned_o    = cur_unsigned_q;
  assign shift_o       = cur_shift_q;
  assign mult_o        = cur_mult_q;
  assign bits_o        = cur_bits_q;
  assign conv_o        = cur_conv_q;
  assign fmap_h_o      = cur_fmap_h_q;
  assign fmap_w_o      = cur_fmap_w_q;
  assign fmap_ch_o     = cur_fmap_ch_q;
  assign stride_o      = cur_stride_q;
  assign kh_o          = cur_kh_q;
  assign kw_o          = cur_kw_q;
  assign pad_t_o       = cur_pad_t_q;
  assign pad_l_o       = cur_pad_l_q;
  assign out_w_o       = cur_out_w_q;
  // `add` operands, latched at its dispatch
  assign add_n_o       = add_n_q;
  assign add_ma_o      = add_ma_q;
  assign add_mb_o      = add_mb_q;

`ifndef SYNTHESIS
  // Assertions: legal state, legal error code, the dependency rules kept (immediate assertions).
  always @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
    end else begin
      assert (state_q <= CtlFinish) else $fatal(1, "pqa_ctrl: illegal state %0d", state_q);
      if (finish_o) begin
        assert (err_code_q <= pqa_pkg::ErrBus) else $fatal(1, "pqa_ctrl: illegal error code %0d", err_code_q);
        assert (all_idle) else $fatal(1, "pqa_ctrl: stopped with a unit busy");
      end
      assert (!(ld_busy_q && fetch_busy_q)) else $fatal(1, "pqa_ctrl: a fetch and a load in the read engine");
      // no load into a buffer that the compute unit uses, no compute while the store unit reads out
`ifndef PQA_MUTANT_NODEP  // (the mutant must be caught by the comparison with the golden simulator)
      assert (!(ld_busy_q && cu_busy_q && (ld_wr_q & (cu_rd_q | cu_wr_q)) != '0))
        else $fatal(1, "pqa_ctrl: a load into buffer %0d bank %0d while the compute unit uses it", ld_buf_q,
                    ld_bank_q);
`endif
      assert (!(cu_busy_q && st_busy_q && (st_wr_q & (cu_rd_q | cu_wr_q)) != '0))
        else $fatal(1, "pqa_ctrl: the compute unit uses the output buffer while the store unit reads it");
      // The look-up and vector units report the end of an operation only during one.
      assert (!lk_done_i || (cu_busy_q && cu_run_q)) else $fatal(1, "pqa_ctrl: a done from an idle look-up unit");
      assert (!vec_done_i || (cu_busy_q && !cu_run_q)) else $fatal(1, "pqa_ctrl: a done from an idle vector unit");
    end
  end
`endif

endmodule

`default_nettype wire
