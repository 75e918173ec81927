// kite-seccomp-bpf OUTPUT.swift: compiles every Kite thread kind's allow-list to classic
// BPF with libseccomp, for both default actions, and writes them as Swift arrays with the
// system call names by number. The SeccompBPF build plugin runs it for the Sandbox target,
// so `kite` installs ready programs and does not link libseccomp.
import SeccompAllowLists
import SeccompCompiler
#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let line = Array("kite-seccomp-bpf: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(1)
}

guard CommandLine.arguments.count == 2 else { fail("usage: kite-seccomp-bpf OUTPUT.swift") }
var text = """
// Generated at build time by kite-seccomp-bpf (Sources/kite-seccomp-bpf) from
// Sources/SeccompAllowLists with libseccomp. Do not edit.
import SeccompAllowLists

enum CompiledAllowLists {

"""
do {
    for action in SeccompCompiler.DefaultAction.allCases {
        let programs = try SeccompCompiler.compileAll(action)
        text += "    /// Default action \(action): one program per thread kind (struct sock_filter, 8 bytes each).\n"
        text += "    static let \(action): [ThreadRole: [UInt64]] = [\n"
        for role in ThreadRole.allCases {
            let words = programs[role]!.map { "0x" + String($0, radix: 16) }
            text += "        .\(role): [\n"
            for start in stride(from: 0, to: words.count, by: 6) {
                text += "            " + words[start ..< min(start + 6, words.count)].joined(separator: ", ") + ",\n"
            }
            text += "        ],\n"
        }
        text += "    ]\n\n"
    }
} catch {
    fail(error.description)
}
let names = SeccompCompiler.syscallNames()
text += "    /// System call names by number on this architecture (nil where none).\n"
text += "    static let syscallNames: [StaticString?] = [\n"
for start in stride(from: 0, to: names.count, by: 8) {
    text += "        " + names[start ..< min(start + 8, names.count)].map { $0.map { "\"\($0)\"" } ?? "nil" }.joined(separator: ", ") + ",\n"
}
text += "    ]\n}\n"

let path = CommandLine.arguments[1]
guard let file = fopen(path, "w") else { fail("cannot write \(path): \(String(cString: strerror(errno)))") }
if fputs(text, file) < 0 || fclose(file) != 0 { fail("cannot write \(path): \(String(cString: strerror(errno)))") }
