// CSeccompCompiler: libseccomp (Debian's libseccomp-dev), used only at build time by
// kite-seccomp-bpf (and by the tests) to compile the allow-lists to BPF. The kite binary
// does not link it.
#ifndef CSECCOMPCOMPILER_H
#define CSECCOMPCOMPILER_H

#include <seccomp.h>

/// Compiles `ctx` to classic BPF (through a memfd: libseccomp 2.5 exports only to a file
/// descriptor). On success stores a malloc'd program in `*program` (free() it) and returns
/// its length in instructions; -errno on failure.
long kite_seccomp_export(const scmp_filter_ctx ctx, void **program);

#endif
