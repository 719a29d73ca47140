// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_lookup: table (pqa_rowmem, NS lanes), bias and output buffers (pqa_widemem, NOUT
// biases / outputs a cycle), as in pqa_top, with a load port and an output read port for the test, and a
// stand-in for the encoder: it pushes the run's groups of NS indices (loaded by the test) into the unit's
// index queue as the encoder does (a group when the queue's credit allows, written a cycle later), every
// cycle or (stall_i) about three cycles in four.

`default_nettype none

module tb_lookup #(
  parameter int LutW      = 8,
  parameter int AccW      = 32,
  parameter int CMax      = 32,
  parameter int MMax      = 128,
  parameter int NS        = 1,
  parameter int NOUT      = 1,
  parameter int LutBytes  = 16384,
  parameter int BiasWords = 32,
  parameter int OutBytes  = 4096
) (
  input  logic        clk_i,
  input  logic        rst_ni,
  input  logic        start_i,
  input  logic [15:0] n_i,           // columns
  input  logic [15:0] ostride_i,     // output bytes from column j to j+1 (0: m)
  input  logic [15:0] ooff_i,        // output byte of column 0
  input  logic        hold_i,        // run.dst = none: no outputs, the accumulators held
  input  logic        acc_i,         // run.acc: start from the held accumulators
  input  logic        stall_i,
  input  logic        pack_i,        // shape.pack (LutW > 8 only)
  input  logic [7:0]  k_i,
  input  logic [7:0]  c_i,
  input  logic [15:0] m_i,
  input  logic [15:0] mult_i,
  input  logic [5:0]  shift_i,
  input  logic        relu_i,
  input  logic [3:0]  bits_i,
  input  logic        load_we_i,
  input  logic [1:0]  load_sel_i,    // 0: table, 1: bias, 2: output buffer (to clear it), 3: the index groups
  input  logic [15:0] load_addr_i,   // word address
  input  logic [63:0] load_data_i,
  input  logic [15:0] out_raddr_i,   // word address, data one cycle later
  output logic [63:0] out_rdata_o,
  output logic [31:0] cycles_o,      // cycles from start to done
  output logic        done_o
);

  localparam int LutAw     = $clog2(LutBytes / 8);
  localparam int LaneBytes = pqa_pkg::row_stride(NOUT * pqa_pkg::elem_bytes(LutW), 8);
  localparam int LutRows   = LutBytes / pqa_pkg::row_stride(NS * LaneBytes, 8);
  localparam int LutRowAw  = (LutRows > 1) ? $clog2(LutRows) : 1;
  localparam int BiasGroup = NOUT * 4;
  localparam int BiasPort  = (BiasGroup > 8) ? BiasGroup : 8;
  localparam int OutPort   = (NOUT > 8) ? NOUT : 8;

  logic [NS*LutRowAw-1:0]    lut_raddr;
  logic [NS*LaneBytes*8-1:0] lut_rdata;
  logic [31:0]          bias_roff, out_woff;
  logic [BiasPort*8-1:0] bias_rdata;
  logic [OutPort*8-1:0]  out_rline;
  logic [NOUT*8-1:0]    out_wdata;
  logic                 out_we;
  logic [NOUT-1:0]      out_wbe;

  pqa_rowmem #(.Bytes(LutBytes), .NS(NS), .LaneBytes(LaneBytes)) u_lut (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd0), .waddr_i(load_addr_i[LutAw-1:0]), .wdata_i(load_data_i),
    .raddr_i(lut_raddr), .rdata_o(lut_rdata)
  );
  pqa_widemem #(.Bytes(BiasWords * 8), .WideBytes(BiasGroup), .Align(BiasGroup & -BiasGroup)) u_bias (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i == 2'd1), .woff_i({13'd0, load_addr_i, 3'd0}),
    .wdata_i((BiasPort*8)'(load_data_i)), .wbe_i(BiasPort'(8'hff)), .roff_i(bias_roff), .rdata_o(bias_rdata)
  );
  pqa_widemem #(.Bytes(OutBytes), .WideBytes(NOUT)) u_out (
    .clk_i(clk_i), .we_i(out_we || (load_we_i && load_sel_i == 2'd2)),
    .woff_i(out_we ? out_woff : {13'd0, load_addr_i, 3'd0}),
    .wdata_i(out_we ? (OutPort*8)'(out_wdata) : (OutPort*8)'(load_data_i)),
    .wbe_i(out_we ? OutPort'(out_wbe) : OutPort'(8'hff)),
    .roff_i({13'd0, out_raddr_i, 3'd0}), .rdata_o(out_rline)
  );
  assign out_rdata_o = out_rline[63:0];

  // The encoder's stand-in: group p of the run (column by column) is word p of the load port's sel 3.
  localparam int GroupsCap = 256;
  logic [NS*8-1:0] groups_q [GroupsCap];
  logic [15:0]     total, sent_q;
  logic [15:0]     lfsr_q;
  logic            busy_q, push, we_q, credit, done;
  logic [NS*8-1:0] wdata_q;

  always_ff @(posedge clk_i) begin
    if (load_we_i && load_sel_i == 2'd3) begin
      groups_q[load_addr_i[7:0]] <= load_data_i[NS*8-1:0];
    end
  end

  assign total = n_i * 16'((32'(c_i) + NS - 1) / NS);
  assign push  = busy_q && sent_q != total && credit && (!stall_i || lfsr_q[0] || lfsr_q[1]);

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      busy_q   <= 1'b0;
      sent_q   <= '0;
      we_q     <= 1'b0;
      wdata_q  <= '0;
      lfsr_q   <= 16'h1d2b;
      cycles_o <= '0;
    end else begin
      lfsr_q <= {lfsr_q[14:0], lfsr_q[15] ^ lfsr_q[13] ^ lfsr_q[12] ^ lfsr_q[10]};
      we_q   <= push;
      if (push) begin
        wdata_q <= groups_q[sent_q[7:0]];
        sent_q  <= sent_q + 16'd1;
      end
      if (start_i) begin
        busy_q   <= 1'b1;
        sent_q   <= '0;
        cycles_o <= '0;
      end else if (busy_q) begin
        cycles_o <= cycles_o + 32'd1;
      end
      if (done) begin
        busy_q <= 1'b0;
      end
    end
  end
  assign done_o = done;

  pqa_lookup #(
    .LutW(LutW), .AccW(AccW), .ActW(8), .MMax(MMax), .NS(NS), .NOUT(NOUT), .LaneBytes(LaneBytes),
    .LutRowAw(LutRowAw), .BiasBytes(BiasWords * 8), .OutBytes(OutBytes)
  ) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .n_i(24'(n_i)), .ostride_i(ostride_i), .ooff_i(ooff_i), .hold_i(hold_i), .acc_i(acc_i),
    .pack_i(pack_i), .k_i(k_i), .c_i(c_i), .m_i(m_i),
    .mult_i(mult_i), .shift_i(shift_i), .relu_i(relu_i), .unsigned_i(1'b0), .bits_i(bits_i), .idx_we_i(we_q),
    .idx_wdata_i(wdata_q), .idx_credit_o(credit), .lut_raddr_o(lut_raddr), .lut_rdata_i(lut_rdata),
    .bias_roff_o(bias_roff), .bias_rdata_i(bias_rdata[BiasGroup*8-1:0]), .out_we_o(out_we), .out_woff_o(out_woff),
    .out_wdata_o(out_wdata), .out_wbe_o(out_wbe), .done_o(done)
  );

  logic unused;
  assign unused = ^{load_addr_i, out_raddr_i, out_rline, bias_rdata};

endmodule

`default_nettype wire
