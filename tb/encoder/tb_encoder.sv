// Copyright PQA contributors. SPDX-License-Identifier: Apache-2.0
//
// Testbench wrapper of pqa_encoder (with its convolution address generator): the act buffer (pqa_widemem) and
// the prototype buffer (pqa_protomem, prototype rows of NS x NP x PL), as in pqa_top, with a load port for
// the test, and a capture of the indices the encoder writes (NS per group), exposed as one flat vector, so
// that the test touches no signal per cycle while the encoder runs.

`default_nettype none

module tb_encoder #(
  parameter int ActBytes   = 4096,
  parameter int ProtoBytes = 4096,
  parameter int CMax       = 64,
  parameter int VMax       = 9,
  parameter int NS         = 1,
  parameter int NP         = 1,
  parameter int PL         = 1,
  parameter int CCap       = 64,    // subspaces captured per column
  parameter int NCap       = 48     // columns captured
) (
  input  logic              clk_i,
  input  logic              rst_ni,
  input  logic              start_i,
  input  logic [15:0]       n_i,          // columns of the run
  input  logic              stall_i,      // withhold the index queue's credit now and then
  input  logic              metric_i,
  input  logic [7:0]        k_i,
  input  logic [7:0]        v_i,
  input  logic [7:0]        c_i,
  input  logic [15:0]       d_i,
  input  logic [31:0]       col_base_i,
  input  logic              conv_i,
  input  logic [15:0]       fmap_h_i,
  input  logic [15:0]       fmap_w_i,
  input  logic [15:0]       fmap_ch_i,
  input  logic [3:0]        stride_i,
  input  logic [7:0]        kh_i,
  input  logic [7:0]        kw_i,
  input  logic [7:0]        pad_t_i,
  input  logic [7:0]        pad_l_i,
  input  logic [15:0]       out_w_i,
  input  logic              run_start_i,
  input  logic              load_we_i,
  input  logic              load_sel_i,   // 0: act, 1: proto
  input  logic [15:0]       load_addr_i,  // word address
  input  logic [63:0]       load_data_i,
  output logic [8*CCap*NCap-1:0] idx_o,  // column j, subspace ci at byte j*CCap + ci
  output logic [15:0]       idx_writes_o, // groups written
  output logic [31:0]       cycles_o,     // cycles from start to done (the last group written)
  output logic              done_o
);

  localparam int GatherPos   = 3;  // HwConfig.GATHER_POSITIONS
  localparam int GatherRowsMax = 3;  // HwConfig.GATHER_ROWS
  localparam int GatherRows  = (NS > 1) ? GatherRowsMax : 1;
  localparam int GatherChGroups = 4;  // HwConfig.GATHER_CH_GROUPS
  localparam int GatherCh    = (GatherChGroups * NS < CMax) ? GatherChGroups * NS : CMax;
  localparam int GatherSpan  = (NS > 1) ? (GatherPos - 1) * GatherCh + NS : GatherPos * NS;
  localparam int GatherBytes = (GatherSpan > VMax) ? GatherSpan : VMax;
  localparam int ActPort   = (GatherBytes > 8) ? GatherBytes : 8;
  localparam int ProtoAw   = $clog2(ProtoBytes / 8);
  localparam int RowBytes  = NS * NP * PL;
  localparam int ProtoRows = ProtoBytes / pqa_pkg::row_stride(RowBytes, 8);
  localparam int RowAw     = (ProtoRows > 1) ? $clog2(ProtoRows) : 1;

  logic [GatherRows*32-1:0] act_roff;
  logic [GatherRows*GatherBytes*8-1:0] enc_rdata;
  logic [RowAw-1:0]      proto_raddr;
  logic [GatherRows*ActPort*8-1:0] act_rdata;
  logic [RowBytes*8-1:0] proto_rdata;
  logic                  idx_we, done, busy_q;
  logic [7:0]            idx_group;
  logic [NS*8-1:0]       idx_wdata;

  for (genvar r = 0; r < GatherRows; r++) begin : gen_act  // one copy per read port
    pqa_widemem #(.Bytes(ActBytes), .WideBytes(GatherBytes)) u_act (
      .clk_i(clk_i), .we_i(load_we_i && !load_sel_i), .woff_i({13'd0, load_addr_i, 3'd0}),
      .wdata_i((ActPort*8)'(load_data_i)), .wbe_i(ActPort'(8'hff)), .roff_i(act_roff[r*32 +: 32]),
      .rdata_o(act_rdata[r*ActPort*8 +: ActPort*8])
    );
    assign enc_rdata[r*GatherBytes*8 +: GatherBytes*8] = act_rdata[r*ActPort*8 +: GatherBytes*8];
  end
  pqa_protomem #(.ProtoBytes(ProtoBytes), .RowBytes(RowBytes)) u_proto (
    .clk_i(clk_i), .we_i(load_we_i && load_sel_i), .waddr_i(load_addr_i[ProtoAw-1:0]), .wdata_i(load_data_i),
    .raddr_i(proto_raddr), .rdata_o(proto_rdata)
  );

  pqa_encoder #(.ActBytes(ActBytes), .CMax(CMax), .VMax(VMax), .NS(NS), .NP(NP), .PL(PL), .RowAw(RowAw),
                .GatherPos(GatherPos), .GatherRowsMax(GatherRowsMax),
                .GatherChGroups(GatherChGroups)) u_dut (
    .clk_i(clk_i), .rst_ni(rst_ni), .start_i(start_i), .n_i(24'(n_i)), .metric_i(metric_i), .k_i(k_i), .v_i(v_i), .c_i(c_i), .d_i(d_i), .col_base_i(col_base_i),
    .conv_i(conv_i), .fmap_h_i(fmap_h_i), .fmap_w_i(fmap_w_i), .fmap_ch_i(fmap_ch_i), .stride_i(stride_i), .kh_i(kh_i),
    .kw_i(kw_i), .pad_t_i(pad_t_i), .pad_l_i(pad_l_i), .out_w_i(out_w_i), .run_start_i(run_start_i),
    .act_roff_o(act_roff), .act_rdata_i(enc_rdata), .proto_raddr_o(proto_raddr), .proto_rdata_i(proto_rdata),
    .idx_credit_i(credit), .idx_we_o(idx_we), .idx_group_o(idx_group), .idx_wdata_o(idx_wdata), .done_o(done)
  );

  // The index queue's credit: always, or (stall_i) about three cycles in four (a 16-bit LFSR).
  logic [15:0] lfsr_q;
  logic        credit;
  logic [15:0] wcol_q;  // the column of the next index write
  assign credit = !stall_i || lfsr_q[0] || lfsr_q[1];

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      for (int b = 0; b < CCap*NCap; b++) begin
        idx_o[b*8 +: 8] <= '0;
      end
      idx_writes_o <= '0;
      cycles_o     <= '0;
      busy_q       <= 1'b0;
      lfsr_q       <= 16'hace1;
      wcol_q       <= '0;
    end else begin
      lfsr_q <= {lfsr_q[14:0], lfsr_q[15] ^ lfsr_q[13] ^ lfsr_q[12] ^ lfsr_q[10]};
      if (start_i) begin
        idx_writes_o <= '0;
        cycles_o     <= '0;
        busy_q       <= 1'b1;
        wcol_q       <= '0;
      end else if (busy_q) begin
        cycles_o <= cycles_o + 32'd1;
      end
      if (done) begin
        busy_q <= 1'b0;
      end
      if (idx_we) begin
        for (int s = 0; s < NS; s++) begin
          if (32'(idx_group) * NS + s < CCap && 32'(wcol_q) < NCap) begin
            idx_o[8*(32'(wcol_q)*CCap + 32'(idx_group)*NS + s) +: 8] <= idx_wdata[s*8 +: 8];
          end
        end
        idx_writes_o <= idx_writes_o + 16'd1;
        if ((32'(idx_group) + 1) * NS >= 32'(c_i)) begin
          wcol_q <= wcol_q + 16'd1;
        end
      end
    end
  end

  assign done_o = done;
  logic unused;
  assign unused = ^{load_addr_i, act_rdata};

endmodule

`default_nettype wire
