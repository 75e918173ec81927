// swift-tools-version:6.0
import PackageDescription

// Targets are split by concern; each depends only on the layers below it:
//   CHost (C shims for host system calls Swift cannot make directly) and CKVM (<linux/kvm.h>)
//   -> KVM (fds, mappings, exits) -> GuestMemory
//   ACPI (table and AML builders, pure data) / X86Boot (kernel loading, CPUID, page tables)
//   Diagnosis (console watcher, kernel symbols and kallsyms, hang rules, log explanation; pure data)
//   APIC (the local APIC, IOAPIC, 8259 PICs and IPI routing as pure state, for Kite's own
//   interrupt controllers)
//   Devices (UART, i8042, ACPI power); Virtio (split virtqueue, MMIO transport) -> VirtioDevices
//   SeccompAllowLists (what each thread may call, as data) -> Sandbox (installs the programs
//   that the SeccompBPF plugin compiled from the lists at build time with libseccomp, through
//   kite-seccomp-bpf and SeccompCompiler; kite does not link libseccomp)
//   -> VMM (the boot recipe, vCPU threads, device event loop)
//   GuestInit (the built-in initramfs: a tiny x86-64 init Kite writes itself) -> BootMatrix
//   (kite boot-test: runs of `kite run` across CPU counts and interrupt controllers)
//   -> kite (CLI, its commands declared for CommandLineParsing; `kite explain` is Diagnosis's log reader)
// scripts/build-release sets KITE_STATIC=1 (and passes --disable-local-rpath): the release
// `kite` is then one static-pie executable (glibc and the Swift runtime linked in, its
// address still randomized), as Firecracker ships. It has no shared libraries to map: 1.7 MiB
// less RSS at start (Docs/Lighter-findings.md). glibc's static-pie start-up refuses a
// RUNPATH, which SwiftPM adds unless told not to, hence the script.
let staticExecutable = Context.environment["KITE_STATIC"] == "1"

let package = Package(
    name: "Kite",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kite", targets: ["kite"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),   // LogHandler.log(event:)
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .target(name: "CHost"),
        // Retrying interrupted system calls, for every target that makes them.
        .target(name: "HostCalls"),
        // kite's commands as data: matching arguments and rendering help without reflection.
        .target(name: "CommandLineParsing"),
        .target(name: "CKVM"),
        .target(name: "SeccompAllowLists", dependencies: ["CKVM"]),
        // Debian's libseccomp-dev compiles the allow-lists to BPF (scripts/install-deps), at
        // build time only: the plugin runs kite-seccomp-bpf, whose output Sandbox compiles in.
        .target(name: "CSeccompCompiler", linkerSettings: [.linkedLibrary("seccomp")]),
        .target(name: "SeccompCompiler", dependencies: ["CSeccompCompiler", "SeccompAllowLists"]),
        .executableTarget(name: "kite-seccomp-bpf", dependencies: ["SeccompCompiler", "SeccompAllowLists"]),
        .plugin(name: "SeccompBPF", capability: .buildTool(), dependencies: ["kite-seccomp-bpf"]),
        .target(name: "CSandbox"),
        .target(name: "Sandbox", dependencies: ["CSandbox", "SeccompAllowLists"], plugins: ["SeccompBPF"]),
        .target(name: "GuestMemory"),
        .target(name: "KVM", dependencies: ["CHost", "CKVM", "GuestMemory"]),
        .target(name: "ACPI"),
        .target(name: "X86Boot", dependencies: [
            "GuestMemory", "KVM", "CKVM",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        .target(name: "Devices"),
        .target(name: "APIC"),
        .target(name: "Diagnosis", dependencies: ["HostCalls"]),
        .target(name: "Virtio", dependencies: ["GuestMemory", "Devices"]),
        .target(name: "VirtioDevices", dependencies: [
            "Virtio", "GuestMemory", "CHost", "HostCalls",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The built-in initramfs of `kite boot-test`: an x86-64 encoder, ELF and cpio writers (pure data).
        .target(name: "GuestInit"),
        // `kite boot-test`: the matrix of runs, child kite processes, classification, table/JSON/JUnit.
        .target(name: "BootMatrix", dependencies: ["GuestInit", "VMM", "Diagnosis", "CHost", "HostCalls"]),
        .target(name: "VMM", dependencies: [
            "CHost", "CKVM", "KVM", "GuestMemory", "ACPI", "X86Boot", "Devices", "Virtio", "VirtioDevices", "Diagnosis", "APIC", "Sandbox", "SeccompAllowLists", "HostCalls",
        ]),
        .executableTarget(name: "kite", dependencies: [
            "VMM", "VirtioDevices", "Sandbox", "SeccompAllowLists", "Diagnosis", "HostCalls", "BootMatrix", "CommandLineParsing",
            .product(name: "Logging", package: "swift-log"),
        ], linkerSettings: [
            // Less memory outside guest RAM (Docs/Lighter-findings.md). The executable stays
            // position-independent (its address is randomized), but its 42,000 relative
            // relocations are packed as DT_RELR (8 KB instead of a 1 MB table the dynamic
            // loader read at every start; glibc 2.36 applies them; lld writes them, gold
            // cannot); and without --export-dynamic (which the static Swift runtime's link
            // arguments add) the dynamic symbol table shrinks from 0.6 MB to 15 KB. Nothing
            // in Kite looks up its own symbols at run time; the backtracer reads .symtab.
            .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                          "-Xlinker", "--no-export-dynamic"], .when(platforms: [.linux])),
        ] + (staticExecutable ? [
            .unsafeFlags(["-static-executable", "-Xclang-linker", "-static-pie"], .when(platforms: [.linux], configuration: .release)),
        ] : [])),
        // Shared by the test targets (a seeded random generator).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "UnitTests", dependencies: [
            "CHost", "CKVM", "Sandbox", "SeccompAllowLists", "SeccompCompiler", "CommandLineParsing", "ACPI", "X86Boot", "Devices", "VMM", "GuestMemory", "KVM", "APIC", "Diagnosis",
        ]),
        .testTarget(name: "BootMatrixTests", dependencies: ["BootMatrix", "GuestInit"]),
        .testTarget(name: "APICTests", dependencies: ["APIC"]),
        .testTarget(name: "DiagnosisTests", dependencies: ["Diagnosis", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "VirtioDevices", "GuestMemory", "Devices", "TestSupport"]),
        .testTarget(name: "KVMTests", dependencies: [
            "CHost", "CKVM", "KVM", "GuestMemory", "VMM", "Devices", "Diagnosis", "TestSupport",
        ]),
    ]
)
