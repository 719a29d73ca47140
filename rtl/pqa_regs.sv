// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// AXI4-Lite register file (RegDataW-bit registers, map in pqa_pkg / docs/isa.md). Write address and
// write data are accepted independently and the write happens once both are held; one read and one
// write may be outstanding at a time. Unmapped addresses read 0 and ignore writes (response OKAY).
// Registers are decoded on the address bits above the byte offset within a register (7:2 for 32-bit
// registers): a narrow access carries an unaligned address (AXI4-Lite allows it, e.g. a byte write to
// offset 0x0E has WSTRB 0100) and reaches the register of its word.
// CTRL and STATUS react to byte lane 0 only; INSN_BASE honours all byte strobes.

`default_nettype none

module pqa_regs (
  input  logic                           clk_i,
  input  logic                           rst_ni,
  // AXI4-Lite slave
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
  // core
  output logic                           start_o,
  output logic [pqa_pkg::RegDataW-1:0]   insn_base_o,
  output logic                           irq_o,
  input  logic                           busy_i,
  input  logic                           finish_i,
  input  logic [pqa_pkg::ErrW-1:0]       err_code_i,
  input  logic [pqa_pkg::RegDataW-1:0]   err_pc_i,
  input  logic [pqa_pkg::RegDataW-1:0]   insn_count_i,
  input  logic [pqa_pkg::CyclesW-1:0]    cycles_i
);

  localparam int RegBytes = pqa_pkg::RegDataW / 8;
  localparam int RegAlign = $clog2(RegBytes);  // byte-offset bits within a register

  logic                          aw_full_q, w_full_q, bvalid_q, rvalid_q;
  logic [pqa_pkg::RegAddrW-1:0]  awaddr_q;
  logic [pqa_pkg::RegDataW-1:0]  wdata_q, rdata_q;
  logic [RegBytes-1:0]           wstrb_q;
  logic                          irq_en_q, done_q, error_q;
  logic [pqa_pkg::RegDataW-1:0]  insn_base_q;
  logic                          do_write;

  assign s_axil_awready = !aw_full_q;
  assign s_axil_wready  = !w_full_q;
  assign s_axil_bvalid  = bvalid_q;
  assign s_axil_bresp   = 2'b00;
  assign s_axil_arready = !rvalid_q;
  assign s_axil_rvalid  = rvalid_q;
  assign s_axil_rdata   = rdata_q;
  assign s_axil_rresp   = 2'b00;

  assign do_write = aw_full_q && w_full_q && !bvalid_q;
  logic [pqa_pkg::RegAddrW-1:0] waddr_w, raddr_w;  // register-aligned offsets
  assign waddr_w  = {awaddr_q[pqa_pkg::RegAddrW-1:RegAlign], {RegAlign{1'b0}}};
  assign raddr_w  = {s_axil_araddr[pqa_pkg::RegAddrW-1:RegAlign], {RegAlign{1'b0}}};
  assign start_o  = do_write && (waddr_w == pqa_pkg::RegCtrl) && wstrb_q[0]
                    && wdata_q[pqa_pkg::CtrlStartBit] && !busy_i;

  logic [pqa_pkg::RegDataW-1:0] rdata;
  always_comb begin
    rdata = '0;
    unique case (raddr_w)
      pqa_pkg::RegCtrl:      rdata[pqa_pkg::CtrlIrqEnBit] = irq_en_q;
      pqa_pkg::RegStatus: begin
        rdata[pqa_pkg::StatusBusyBit]  = busy_i;
        rdata[pqa_pkg::StatusDoneBit]  = done_q;
        rdata[pqa_pkg::StatusErrorBit] = error_q;
      end
      pqa_pkg::RegErrCode:   rdata = pqa_pkg::RegDataW'(err_code_i);
      pqa_pkg::RegInsnBase:  rdata = insn_base_q;
      pqa_pkg::RegCyclesLo:  rdata = cycles_i[0 +: pqa_pkg::RegDataW];
      pqa_pkg::RegCyclesHi:  rdata = cycles_i[pqa_pkg::RegDataW +: pqa_pkg::RegDataW];
      pqa_pkg::RegErrPc:     rdata = err_pc_i;
      pqa_pkg::RegInsnCount: rdata = insn_count_i;
      pqa_pkg::RegId:        rdata = pqa_pkg::IdValue;
      default:               rdata = '0;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      aw_full_q   <= 1'b0;
      w_full_q    <= 1'b0;
      bvalid_q    <= 1'b0;
      rvalid_q    <= 1'b0;
      awaddr_q    <= '0;
      wdata_q     <= '0;
      wstrb_q     <= '0;
      rdata_q     <= '0;
      irq_en_q    <= 1'b0;
      done_q      <= 1'b0;
      error_q     <= 1'b0;
      insn_base_q <= '0;
    end else begin
      if (s_axil_awvalid && !aw_full_q) begin
        aw_full_q <= 1'b1;
        awaddr_q  <= s_axil_awaddr;
      end
      if (s_axil_wvalid && !w_full_q) begin
        w_full_q <= 1'b1;
        wdata_q  <= s_axil_wdata;
        wstrb_q  <= s_axil_wstrb;
      end
      if (bvalid_q && s_axil_bready) begin
        bvalid_q <= 1'b0;
      end
      if (do_write) begin
        aw_full_q <= 1'b0;
        w_full_q  <= 1'b0;
        bvalid_q  <= 1'b1;
        unique case (waddr_w)
          pqa_pkg::RegCtrl: begin
            if (wstrb_q[0]) begin
              irq_en_q <= wdata_q[pqa_pkg::CtrlIrqEnBit];
            end
          end
          pqa_pkg::RegStatus: begin
            if (wstrb_q[0] && wdata_q[pqa_pkg::StatusDoneBit]) begin
              done_q <= 1'b0;
            end
            if (wstrb_q[0] && wdata_q[pqa_pkg::StatusErrorBit]) begin
              error_q <= 1'b0;
            end
          end
          pqa_pkg::RegInsnBase: begin
            for (int b = 0; b < RegBytes; b++) begin
              if (wstrb_q[b]) begin
                insn_base_q[b*8 +: 8] <= wdata_q[b*8 +: 8];
              end
            end
          end
          default: ;
        endcase
      end
      if (start_o) begin
        done_q  <= 1'b0;
        error_q <= 1'b0;
      end
      if (finish_i) begin
        done_q  <= (err_code_i == pqa_pkg::ErrNone);
        error_q <= (err_code_i != pqa_pkg::ErrNone);
      end
      if (s_axil_arvalid && !rvalid_q) begin
        rvalid_q <= 1'b1;
        rdata_q  <= rdata;
      end else if (rvalid_q && s_axil_rready) begin
        rvalid_q <= 1'b0;
      end
    end
  end

  assign irq_o       = irq_en_q && (done_q || error_q);
  assign insn_base_o = insn_base_q;

  logic unused_prot;
  assign unused_prot = ^{s_axil_awprot, s_axil_arprot, s_axil_araddr[RegAlign-1:0],  // + byte offsets
                         awaddr_q[RegAlign-1:0]};

endmodule

`default_nettype wire
