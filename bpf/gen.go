package bpf

// The generated zonelb_bpfel.go/zonelb_bpfeb.go and their .o objects are
// committed so that building zonelb needs no clang. `make generate` (see
// bpf.mk) installs the toolchain and reruns this. <asm/types.h> comes from
// the Debian multiarch directory of whichever host runs the generator.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include/aarch64-linux-gnu" -target bpfel,bpfeb -type svc_key -type orig_dst -type tuple_key -type config -type listener_owner -type claim_args -type zlb_counter -type zlb_cfg_flag -type zlb_listener_slot zonelb c/zonelb.c
