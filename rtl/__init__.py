"""Open-source silicon: the network as distributed-arithmetic Verilog (da4ml),
simulated with Verilator and synthesised with Yosys, no vendor tools."""
