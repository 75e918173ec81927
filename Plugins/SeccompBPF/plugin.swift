import PackagePlugin

/// Compiles Kite's seccomp allow-lists (Sources/SeccompAllowLists) to BPF while building the
/// target that uses it (Sandbox): runs kite-seccomp-bpf, whose Swift output is compiled into
/// the target. Rebuilt whenever the tool (and so the lists it is built from) changes.
@main struct SeccompBPF: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let tool = try context.tool(named: "kite-seccomp-bpf")
        let output = context.pluginWorkDirectoryURL.appending(path: "CompiledAllowLists.swift")
        return [.buildCommand(displayName: "Compiling the seccomp allow-lists to BPF",
                              executable: tool.url, arguments: [output.path],
                              inputFiles: [tool.url], outputFiles: [output])]
    }
}
