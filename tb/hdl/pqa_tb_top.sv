// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench top for long runs: pqa_top on the HDL external memory (pqa_axi_mem), with the host
// written in HDL, so that Python only starts the run and waits for done_o (tb/hdl/hdlmem_cocotb.py,
// driven by tb/pqa_runner.py run_hdlmem).
// - Clock: generated here (period ClkPeriodNs, in the 1 ns time unit that tb/pqa_runner.py builds with)
//   when HdlClock = 1, else taken from clk_i.
// - Reset: held from time 0 until start_i rises, then released after 8 cycles.
// - Host: writes INSN_BASE (insn_base_i) and CTRL = START | IRQ_EN over AXI4-Lite, waits for the
//   interrupt or for max_cycles_i cycles after START (then hang_o), or abort_i; reads STATUS, ERR_CODE,
//   ERR_PC, INSN_COUNT, CYCLES into the result ports, has the memory written out (+PQA_MEM_DUMP), clears
//   DONE/ERROR and checks that the interrupt dropped (irq_cleared_o), then raises done_o.
// Register offsets and bits come from pqa_pkg (generated from the spec).

`default_nettype none

module pqa_tb_top #(
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
  parameter int NS           = pqa_pkg::CfgDefaultNS,
  parameter int NP           = pqa_pkg::CfgDefaultNP,
  parameter int PL           = pqa_pkg::CfgDefaultPL,
  parameter int NOUT         = pqa_pkg::CfgDefaultNOUT,
  parameter int MemBytes     = 1 << 24,
  parameter bit HdlClock     = 1'b1,
  parameter int ClkPeriodNs  = 10
) (
  input  logic        clk_i,          // used only when HdlClock = 0
  input  logic        start_i,
  input  logic        abort_i,
  input  logic [31:0] insn_base_i,
  input  logic [63:0] max_cycles_i,
  output logic        done_o,
  output logic        hang_o,
  output logic        irq_cleared_o,
  output logic        irq_o,
  output logic [31:0] status_o,
  output logic [31:0] err_code_o,
  output logic [31:0] err_pc_o,
  output logic [31:0] insn_count_o,
  output logic [63:0] cycles_o,
  output logic [63:0] host_cycles_o   // cycles from the START write to the interrupt, as the host saw them
);

  logic clk, rst_n;

  if (HdlClock) begin : gen_hdl_clock
    logic clk_q;
    initial begin
      clk_q = 1'b0;
      forever #(ClkPeriodNs / 2.0) clk_q = ~clk_q;
    end
    assign clk = clk_q;
    logic unused_clk;
    assign unused_clk = clk_i;
  end else begin : gen_ext_clock
    assign clk = clk_i;
  end

  // ---------------------------------------------------------------------------------------------
  // DUT and memory
  // ---------------------------------------------------------------------------------------------
  logic [7:0]  s_axil_awaddr, s_axil_araddr;
  logic        s_axil_awvalid, s_axil_awready, s_axil_wvalid, s_axil_wready, s_axil_bvalid, s_axil_bready;
  logic        s_axil_arvalid, s_axil_arready, s_axil_rvalid, s_axil_rready;
  logic [31:0] s_axil_wdata, s_axil_rdata;
  logic [3:0]  s_axil_wstrb;
  logic [1:0]  s_axil_bresp, s_axil_rresp;

  logic [0:0]                awid, bid, arid, rid;
  logic [AxiAddrWidth-1:0]   awaddr, araddr;
  logic [7:0]                awlen, arlen;
  logic [2:0]                awsize, arsize, awprot, arprot;
  logic [1:0]                awburst, arburst, bresp, rresp;
  logic                      awlock, arlock;
  logic [3:0]                awcache, arcache;
  logic                      awvalid, awready, wlast, wvalid, wready, bvalid, bready;
  logic                      arvalid, arready, rlast, rvalid, rready;
  logic [AxiDataWidth-1:0]   wdata, rdata;
  logic [AxiDataWidth/8-1:0] wstrb;
  logic                      dump;

  pqa_top #(
    .AxiDataWidth(AxiDataWidth), .AxiAddrWidth(AxiAddrWidth), .ActW(ActW), .ProtoW(ProtoW), .LutW(LutW),
    .AccW(AccW), .KMax(KMax), .VMax(VMax), .CMax(CMax), .MMax(MMax), .ProtoBytes(ProtoBytes),
    .LutBytes(LutBytes), .ActBytes(ActBytes), .OutBytes(OutBytes), .NS(NS), .NP(NP), .PL(PL), .NOUT(NOUT)
  ) u_dut (
    .clk_i(clk), .rst_ni(rst_n), .irq_o(irq_o),
    .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(3'b000), .s_axil_awvalid(s_axil_awvalid),
    .s_axil_awready(s_axil_awready), .s_axil_wdata(s_axil_wdata), .s_axil_wstrb(s_axil_wstrb),
    .s_axil_wvalid(s_axil_wvalid), .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp),
    .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready), .s_axil_araddr(s_axil_araddr),
    .s_axil_arprot(3'b000), .s_axil_arvalid(s_axil_arvalid), .s_axil_arready(s_axil_arready),
    .s_axil_rdata(s_axil_rdata), .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
    .s_axil_rready(s_axil_rready),
    .m_axi_awid(awid), .m_axi_awaddr(awaddr), .m_axi_awlen(awlen), .m_axi_awsize(awsize),
    .m_axi_awburst(awburst), .m_axi_awlock(awlock), .m_axi_awcache(awcache), .m_axi_awprot(awprot),
    .m_axi_awvalid(awvalid), .m_axi_awready(awready), .m_axi_wdata(wdata), .m_axi_wstrb(wstrb),
    .m_axi_wlast(wlast), .m_axi_wvalid(wvalid), .m_axi_wready(wready), .m_axi_bid(bid),
    .m_axi_bresp(bresp), .m_axi_bvalid(bvalid), .m_axi_bready(bready), .m_axi_arid(arid),
    .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize), .m_axi_arburst(arburst),
    .m_axi_arlock(arlock), .m_axi_arcache(arcache), .m_axi_arprot(arprot), .m_axi_arvalid(arvalid),
    .m_axi_arready(arready), .m_axi_rid(rid), .m_axi_rdata(rdata), .m_axi_rresp(rresp),
    .m_axi_rlast(rlast), .m_axi_rvalid(rvalid), .m_axi_rready(rready)
  );

  pqa_axi_mem #(
    .AxiDataWidth(AxiDataWidth), .AxiAddrWidth(AxiAddrWidth), .MemBytes(MemBytes)
  ) u_mem (
    .clk_i(clk), .rst_ni(rst_n), .dump_i(dump),
    .s_axi_awid(awid), .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize),
    .s_axi_awburst(awburst), .s_axi_awvalid(awvalid), .s_axi_awready(awready), .s_axi_wdata(wdata),
    .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid), .s_axi_wready(wready),
    .s_axi_bid(bid), .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
    .s_axi_arid(arid), .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize),
    .s_axi_arburst(arburst), .s_axi_arvalid(arvalid), .s_axi_arready(arready), .s_axi_rid(rid),
    .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast), .s_axi_rvalid(rvalid),
    .s_axi_rready(rready)
  );

  logic unused_axi;
  assign unused_axi = ^{awlock, awcache, awprot, arlock, arcache, arprot};

  // ---------------------------------------------------------------------------------------------
  // Host: AXI4-Lite master tasks. Signals change on the falling edge and are sampled at the rising
  // edge (before the design's flops update), so there is no race with the design on either simulator.
  // ---------------------------------------------------------------------------------------------
  task automatic axil_write(input logic [7:0] addr, input logic [31:0] data);
    bit aw_hs, w_hs;
    @(negedge clk);
    s_axil_awaddr  = addr;
    s_axil_awvalid = 1'b1;
    s_axil_wdata   = data;
    s_axil_wstrb   = 4'hf;
    s_axil_wvalid  = 1'b1;
    s_axil_bready  = 1'b1;
    while (s_axil_awvalid || s_axil_wvalid) begin
      @(posedge clk);
      aw_hs = s_axil_awvalid && s_axil_awready;
      w_hs  = s_axil_wvalid && s_axil_wready;
      @(negedge clk);
      if (aw_hs) s_axil_awvalid = 1'b0;
      if (w_hs) s_axil_wvalid = 1'b0;
    end
    do @(posedge clk); while (!s_axil_bvalid);
    if (s_axil_bresp != 2'b00) begin
      $fatal(1, "pqa_tb_top: AXI4-Lite write of %02h answered %0d", addr, s_axil_bresp);
    end
    @(negedge clk);
    s_axil_bready = 1'b0;
  endtask

  task automatic axil_read(input logic [7:0] addr, output logic [31:0] data);
    bit ar_hs;
    @(negedge clk);
    s_axil_araddr  = addr;
    s_axil_arvalid = 1'b1;
    s_axil_rready  = 1'b1;
    do begin
      @(posedge clk);
      ar_hs = s_axil_arready;
    end while (!ar_hs);
    @(negedge clk);
    s_axil_arvalid = 1'b0;
    do @(posedge clk); while (!s_axil_rvalid);
    data = s_axil_rdata;
    if (s_axil_rresp != 2'b00) begin
      $fatal(1, "pqa_tb_top: AXI4-Lite read of %02h answered %0d", addr, s_axil_rresp);
    end
    @(negedge clk);
    s_axil_rready = 1'b0;
  endtask

  // Host-side cycle counter (for the limit); counts from the START write.
  logic        counting;
  logic [63:0] host_cycles_q;
  always_ff @(posedge clk or negedge rst_n) begin
    if (!rst_n) begin
      host_cycles_q <= '0;
    end else if (counting) begin
      host_cycles_q <= host_cycles_q + 64'd1;
    end
  end
  assign host_cycles_o = host_cycles_q;

  initial begin : host
    logic [31:0] lo, hi;
    rst_n          = 1'b0;
    dump           = 1'b0;
    counting       = 1'b0;
    done_o         = 1'b0;
    hang_o         = 1'b0;
    irq_cleared_o  = 1'b0;
    status_o       = '0;
    err_code_o     = '0;
    err_pc_o       = '0;
    insn_count_o   = '0;
    cycles_o       = '0;
    s_axil_awaddr  = '0;
    s_axil_awvalid = 1'b0;
    s_axil_wdata   = '0;
    s_axil_wstrb   = '0;
    s_axil_wvalid  = 1'b0;
    s_axil_bready  = 1'b0;
    s_axil_araddr  = '0;
    s_axil_arvalid = 1'b0;
    s_axil_rready  = 1'b0;
    wait (start_i === 1'b1);
    repeat (8) @(posedge clk);
    @(negedge clk);
    rst_n = 1'b1;
    repeat (2) @(posedge clk);
    axil_read(pqa_pkg::RegId, lo);
    if (lo != pqa_pkg::IdValue) begin
      $fatal(1, "pqa_tb_top: ID register reads %08h, expected %08h", lo, pqa_pkg::IdValue);
    end
    axil_write(pqa_pkg::RegInsnBase, insn_base_i);
    axil_write(pqa_pkg::RegCtrl, (32'd1 << pqa_pkg::CtrlStartBit) | (32'd1 << pqa_pkg::CtrlIrqEnBit));
    @(negedge clk);
    counting = 1'b1;
    wait (irq_o === 1'b1 || abort_i === 1'b1 || host_cycles_q >= max_cycles_i);
    hang_o = (irq_o !== 1'b1);
    @(negedge clk);
    counting = 1'b0;
    axil_read(pqa_pkg::RegStatus, status_o);
    axil_read(pqa_pkg::RegErrCode, err_code_o);
    axil_read(pqa_pkg::RegErrPc, err_pc_o);
    axil_read(pqa_pkg::RegInsnCount, insn_count_o);
    axil_read(pqa_pkg::RegCyclesLo, lo);
    axil_read(pqa_pkg::RegCyclesHi, hi);
    cycles_o = {hi, lo};
    @(negedge clk);
    dump = 1'b1;
    repeat (2) @(negedge clk);
    dump = 1'b0;
    if (!hang_o) begin
      axil_write(pqa_pkg::RegStatus, (32'd1 << pqa_pkg::StatusDoneBit) | (32'd1 << pqa_pkg::StatusErrorBit));
      repeat (2) @(posedge clk);
      irq_cleared_o = (irq_o === 1'b0);
    end
    done_o = 1'b1;
  end

endmodule

`default_nettype wire
