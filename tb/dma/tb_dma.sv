// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_dma: the AXI4 master ports go straight out (cocotbext-axi AxiRam attaches to
// m_axi_*); read beats are written into a word buffer at their beat index and write beats are taken from
// it (one-cycle registered read, as the out buffer of pqa_top). The test loads and reads the buffer
// through a host port while the DMA is idle.

`default_nettype none

module tb_dma #(
  parameter int AxiAddrWidth = 32,
  parameter int BufWords     = 1024
) (
  input  logic                    clk_i,
  input  logic                    rst_ni,
  input  logic                    cmd_valid_i,
  input  logic                    cmd_write_i,
  input  logic [AxiAddrWidth-1:0] cmd_addr_i,
  input  logic [21:0]             cmd_beats_i,
  input  logic [7:0]              cmd_last_strb_i,
  output logic                    done_o,
  output logic                    err_o,
  output logic [31:0]             rd_beats_o,    // read beats handed out by the last command
  input  logic                    host_we_i,
  input  logic                    host_sel_i,    // 1: the host owns the buffer's read port
  input  logic [15:0]             host_addr_i,
  input  logic [63:0]             host_wdata_i,
  output logic [63:0]             host_rdata_o,
  output logic [0:0]              m_axi_awid,
  output logic [AxiAddrWidth-1:0] m_axi_awaddr,
  output logic [7:0]              m_axi_awlen,
  output logic [2:0]              m_axi_awsize,
  output logic [1:0]              m_axi_awburst,
  output logic                    m_axi_awlock,
  output logic [3:0]              m_axi_awcache,
  output logic [2:0]              m_axi_awprot,
  output logic                    m_axi_awvalid,
  input  logic                    m_axi_awready,
  output logic [63:0]             m_axi_wdata,
  output logic [7:0]              m_axi_wstrb,
  output logic                    m_axi_wlast,
  output logic                    m_axi_wvalid,
  input  logic                    m_axi_wready,
  input  logic [0:0]              m_axi_bid,
  input  logic [1:0]              m_axi_bresp,
  input  logic                    m_axi_bvalid,
  output logic                    m_axi_bready,
  output logic [0:0]              m_axi_arid,
  output logic [AxiAddrWidth-1:0] m_axi_araddr,
  output logic [7:0]              m_axi_arlen,
  output logic [2:0]              m_axi_arsize,
  output logic [1:0]              m_axi_arburst,
  output logic                    m_axi_arlock,
  output logic [3:0]              m_axi_arcache,
  output logic [2:0]              m_axi_arprot,
  output logic                    m_axi_arvalid,
  input  logic                    m_axi_arready,
  input  logic [0:0]              m_axi_rid,
  input  logic [63:0]             m_axi_rdata,
  input  logic [1:0]              m_axi_rresp,
  input  logic                    m_axi_rlast,
  input  logic                    m_axi_rvalid,
  output logic                    m_axi_rready
);

  localparam int Aw = $clog2(BufWords);

  logic        rd_valid, src_req;
  logic [21:0] rd_idx, src_idx;
  logic [63:0] rd_data, src_data;

  pqa_ram #(.Words(BufWords)) u_buf (
    .clk_i(clk_i), .we_i(host_we_i || rd_valid),
    .waddr_i(host_we_i ? host_addr_i[Aw-1:0] : rd_idx[Aw-1:0]),
    .wdata_i(host_we_i ? host_wdata_i : rd_data), .wbe_i(8'hff),
    .raddr_i(host_sel_i ? host_addr_i[Aw-1:0] : src_idx[Aw-1:0]), .rdata_o(src_data)
  );
  assign host_rdata_o = src_data;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      rd_beats_o <= '0;
    end else if (cmd_valid_i) begin
      rd_beats_o <= '0;
    end else if (rd_valid) begin
      rd_beats_o <= rd_beats_o + 32'd1;
    end
  end

  // One command at a time from the test, to the engine its direction names; done_o and err_o from it.
  logic rd_done, rd_err, wr_done, wr_err, err_q;
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      err_q <= 1'b0;
    end else if (rd_done || wr_done) begin
      err_q <= rd_done ? rd_err : wr_err;
    end
  end
  assign done_o = rd_done || wr_done;
  assign err_o  = rd_done ? rd_err : (wr_done ? wr_err : err_q);

  pqa_dma #(.AxiAddrWidth(AxiAddrWidth), .AxiDataWidth(64)) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni),
    .rd_cmd_valid_i(cmd_valid_i && !cmd_write_i), .rd_cmd_addr_i(cmd_addr_i), .rd_cmd_beats_i(cmd_beats_i),
    .rd_done_o(rd_done), .rd_err_o(rd_err),
    .wr_cmd_valid_i(cmd_valid_i && cmd_write_i), .wr_cmd_addr_i(cmd_addr_i), .wr_cmd_beats_i(cmd_beats_i),
    .wr_cmd_last_strb_i(cmd_last_strb_i), .wr_done_o(wr_done), .wr_err_o(wr_err),
    .rd_valid_o(rd_valid), .rd_idx_o(rd_idx), .rd_data_o(rd_data), .src_req_o(src_req),
    .src_idx_o(src_idx), .src_data_i(src_data),
    .m_axi_awid(m_axi_awid), .m_axi_awaddr(m_axi_awaddr), .m_axi_awlen(m_axi_awlen),
    .m_axi_awsize(m_axi_awsize), .m_axi_awburst(m_axi_awburst), .m_axi_awlock(m_axi_awlock),
    .m_axi_awcache(m_axi_awcache), .m_axi_awprot(m_axi_awprot), .m_axi_awvalid(m_axi_awvalid),
    .m_axi_awready(m_axi_awready), .m_axi_wdata(m_axi_wdata), .m_axi_wstrb(m_axi_wstrb),
    .m_axi_wlast(m_axi_wlast), .m_axi_wvalid(m_axi_wvalid), .m_axi_wready(m_axi_wready),
    .m_axi_bid(m_axi_bid), .m_axi_bresp(m_axi_bresp), .m_axi_bvalid(m_axi_bvalid), .m_axi_bready(m_axi_bready),
    .m_axi_arid(m_axi_arid), .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen),
    .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst), .m_axi_arlock(m_axi_arlock),
    .m_axi_arcache(m_axi_arcache), .m_axi_arprot(m_axi_arprot), .m_axi_arvalid(m_axi_arvalid),
    .m_axi_arready(m_axi_arready), .m_axi_rid(m_axi_rid), .m_axi_rdata(m_axi_rdata),
    .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast), .m_axi_rvalid(m_axi_rvalid),
    .m_axi_rready(m_axi_rready)
  );

  logic unused;
  assign unused = ^{src_req, rd_idx, src_idx, host_addr_i};

endmodule

`default_nettype wire
