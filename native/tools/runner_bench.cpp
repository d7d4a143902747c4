namespace xsam { struct Args; int RunBench(const Args&) { return 2; } }
