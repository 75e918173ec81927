import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `kite firecracker` end to end: the binary, its API on a real Unix socket, and tiny guests
/// on the host's /dev/kvm. The request sequences are the ones firecracker-go-sdk (and so
/// firecracker-containerd) and Kata's runtimes send (Docs/Firecracker-compat-research.md).
@Suite(.serialized) struct FirecrackerEndToEndTests {
    typealias Run = MachineRunTests

    /// One HTTP exchange on a fresh connection: status and body ("" when none came).
    static func http(_ socket: String, _ method: String, _ path: String, _ body: String? = nil) -> (Int, String) {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        if let body { request += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + (body ?? "")
        guard let fd = connectTo(socket) else { return (0, "cannot connect") }
        defer { close(fd) }
        _ = sendAll(fd, Array(request.utf8))
        return readResponse(fd)
    }

    static func connectTo(_ path: String) -> Int32? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = b }
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if ok != 0 { close(fd); return nil }
        return fd
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    /// Reads one response (head, then Content-Length bytes of body).
    static func readResponse(_ fd: Int32) -> (Int, String) { readResponses(fd, 1)[0] }

    /// Reads `count` responses that follow each other on the connection.
    static func readResponses(_ fd: Int32, _ count: Int) -> [(Int, String)] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var responses: [(Int, String)] = []
        while true {
            while responses.count < count, let end = data.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: data[..<end.lowerBound], as: UTF8.self)
                let status = Int(head.split(separator: " ")[1]) ?? 0
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                guard data.count - end.upperBound >= length else { break }
                responses.append((status, String(decoding: data[end.upperBound..<(end.upperBound + length)], as: UTF8.self)))
                data.removeSubrange(..<(end.upperBound + length))
            }
            if responses.count == count { return responses }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return responses + Array(repeating: (0, String(decoding: data, as: UTF8.self)), count: count - responses.count) }
            data += buffer[..<n]
        }
    }

    /// A running `kite firecracker`, its console (stdout) in a file.
    final class Instance {
        let process = Process()
        let socket: String
        let console: String
        let stderr = Pipe()

        init(_ name: String, _ extra: [String] = [], apiSocket: Bool = true, environment: [String: String] = [:]) throws {
            socket = CLITests.tempPath("fc-\(name).sock")
            console = CLITests.tempPath("fc-\(name).console")
            unlink(socket)
            FileManager.default.createFile(atPath: console, contents: nil)
            process.executableURL = URL(fileURLWithPath: CLITests.kite)
            process.arguments = ["firecracker"] + (apiSocket ? ["--api-sock", socket] : []) + extra
            process.standardOutput = FileHandle(forWritingAtPath: console)
            process.standardInput = FileHandle.nullDevice
            process.standardError = stderr
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            try process.run()
            if apiSocket {
                // The Go SDK's readiness probe: GET /machine-config until it answers.
                for _ in 0..<200 where process.isRunning && FirecrackerEndToEndTests.http(socket, "GET", "/machine-config").0 != 200 {
                    usleep(20_000)
                }
            }
        }

        func call(_ method: String, _ path: String, _ body: String? = nil) -> (Int, String) {
            FirecrackerEndToEndTests.http(socket, method, path, body)
        }

        var output: [UInt8] { (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: console)))) ?? [] }

        /// Waits (bounded) until the console holds `count` bytes.
        func waitForOutput(atLeast count: Int, seconds: Double = 10) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while output.count < count && Date() < deadline { usleep(20_000) }
            return output.count >= count
        }

        func finish() -> (status: Int32, stderr: String) {
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }

        func stop() -> (status: Int32, stderr: String) {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            return finish()
        }
    }

    static func kernel(_ name: String, _ code: [UInt8]) throws -> String {
        try CLITests.temp("fc-\(name)", makeBzImage(entryCode: code))
    }

    /// A guest that prints "ready\n", then echoes four bytes it polls from the i8042 (the
    /// keys SendCtrlAltDel presses) to the console, then powers off.
    static let echoFourKeys: [UInt8] = Run.print("ready\n") + [
        0xB9, 0x04, 0x00, 0x00, 0x00,   // mov ecx, 4
        0xE4, 0x64,                     // poll: in al, 0x64
        0xA8, 0x01,                     // test al, 1 (output buffer full)
        0x74, 0xFA,                     // jz poll
        0xE4, 0x60,                     // in al, 0x60
        0x66, 0xBA, 0xF8, 0x03, 0xEE,   // mov dx, 0x3f8; out dx, al
        0xFF, 0xC9,                     // dec ecx
        0x75, 0xEF,                     // jnz poll
    ] + Run.powerOff

    /// A guest that prints a dot, then counts to 2^16, forever.
    static let dotsForever: [UInt8] = [
        0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x2E, 0xEE,   // top: mov dx, 0x3f8; mov al, '.'; out dx, al
        0xB9, 0x00, 0x00, 0x01, 0x00,               // mov ecx, 1 << 16
        0xE2, 0xFE,                                 // loop $
        0xEB, 0xEF,                                 // jmp top
    ]

    @Test func goSDKSequenceBootsAndSendCtrlAltDelEndsTheGuest() throws {
        let kernel = try Self.kernel("keys", Self.echoFourKeys)
        let metrics = CLITests.tempPath("fc-metrics"), log = CLITests.tempPath("fc-log")
        unlink(metrics); unlink(log)
        let vm = try Instance("sdk", ["--id", "sdk-vm"])
        #expect(vm.call("PUT", "/logger", #"{"log_path":"\#(log)","level":"Debug","show_level":true,"show_log_origin":false}"#).0 == 204)
        #expect(vm.call("PUT", "/metrics", #"{"metrics_path":"\#(metrics)"}"#).0 == 204)
        #expect(vm.call("PUT", "/machine-config", #"{"vcpu_count":2,"mem_size_mib":64,"smt":false}"#).0 == 204)
        #expect(vm.call("GET", "/machine-config").1.contains(#""vcpu_count":2,"mem_size_mib":64"#))
        #expect(vm.call("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)","boot_args":"console=ttyS0"}"#).0 == 204)
        #expect(vm.call("GET", "/").1 == #"{"id":"sdk-vm","state":"Not started","vmm_version":"1.12.1","app_name":"Kite"}"#)
        #expect(vm.call("PUT", "/actions", #"{"action_type":"InstanceStart"}"#).0 == 204)
        #expect(vm.call("GET", "/").1.contains(#""state":"Running""#))
        #expect(vm.waitForOutput(atLeast: 6), "the guest never said ready: \(vm.output)")
        #expect(vm.call("PUT", "/actions", #"{"action_type":"FlushMetrics"}"#).0 == 204)
        #expect(vm.call("PUT", "/actions", #"{"action_type":"SendCtrlAltDel"}"#).0 == 204)
        let (status, stderr) = vm.finish()
        #expect(status == 0, "\(stderr)")
        #expect(vm.output == Array("ready\n".utf8) + [0x14, 0x11, 0xE0, 0x71], "the keys, in order")
        let line = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(line.hasPrefix(#"{"utc_timestamp_ms":"#) && line.hasSuffix("}\n"))
        let object = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect((object["put_api_requests"] as? [String: Int])?["boot_source_count"] == 1, "\(line)")
        #expect((object["block"] as? [String: Int])?["read_count"] == 0 && (object["seccomp"] as? [String: Int])?["num_faults"] == 0, "\(line)")
        #expect(!FileManager.default.fileExists(atPath: vm.socket), "the API socket is removed at exit")
    }

    /// Kata's Rust runtime (runtime-rs): every request retried until 2xx, the rootfs and five
    /// 0-byte placeholder drives, PUT /vsock twice (the second replaces the first), then
    /// InstanceStart; it stops the VM with SIGKILL.
    @Test func kataRustRuntimeSequenceBoots() throws {
        let kernel = try Self.kernel("rs", Self.dotsForever)
        let dir = CLITests.tempPath("fc-rs-files")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in ["rootfs"] + (1...5).map({ "drive\($0)" }) {
            FileManager.default.createFile(atPath: "\(dir)/\(name).img", contents: name == "rootfs" ? Data(count: 1 << 20) : Data())
        }
        let vm = try Instance("rs")
        #expect(vm.call("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)","boot_args":"console=ttyS0"}"#).0 == 204)
        #expect(vm.call("PUT", "/machine-config", #"{"mem_size_mib":128,"vcpu_count":2}"#).0 == 204)
        #expect(vm.call("PUT", "/drives/rootfs", #"{"drive_id":"rootfs","path_on_host":"\#(dir)/rootfs.img","is_root_device":false,"is_read_only":true}"#).0 == 204)
        for n in 1...5 {
            #expect(vm.call("PUT", "/drives/drive\(n)", #"{"drive_id":"drive\#(n)","path_on_host":"\#(dir)/drive\#(n).img","is_root_device":false,"is_read_only":false}"#).0 == 204)
        }
        let vsock = #"{"guest_cid":3,"uds_path":"\#(dir)/kata.hvsock","vsock_id":"root"}"#
        #expect(vm.call("PUT", "/vsock", vsock).0 == 204)
        #expect(vm.call("PUT", "/vsock", vsock).0 == 204)
        let start = vm.call("PUT", "/actions", #"{"action_type":"InstanceStart"}"#)
        #expect(start.0 == 204, "\(start.1)")
        let config = vm.call("GET", "/vm/config").1
        #expect(config.components(separatedBy: "\"drive_id\"").count == 7, "six drives: \(config)")
        #expect(FileManager.default.fileExists(atPath: "\(dir)/kata.hvsock"), "the vsock socket exists once the VM runs")
        #expect(vm.waitForOutput(atLeast: 2))
        kill(vm.process.processIdentifier, SIGKILL)
        #expect(vm.finish().status == 9)
    }

    @Test func pauseHoldsEveryVCPUAndResumeLetsThemGoOn() throws {
        let kernel = try Self.kernel("dots", Self.dotsForever)
        let vm = try Instance("pause")
        #expect(vm.call("PUT", "/machine-config", #"{"vcpu_count":2,"mem_size_mib":64}"#).0 == 204)
        #expect(vm.call("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#).0 == 204)
        #expect(vm.call("PUT", "/actions", #"{"action_type":"InstanceStart"}"#).0 == 204)
        #expect(vm.waitForOutput(atLeast: 3))
        // Kata finds vCPU threads by Firecracker's names to put them in cgroups.
        let tasks = "/proc/\(vm.process.processIdentifier)/task"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []).compactMap {
            (try? String(contentsOfFile: "\(tasks)/\($0)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(names.contains("fc_vcpu 0") && names.contains("fc_vcpu 1") && names.contains("kite-api"), "\(names)")
        #expect(vm.call("PATCH", "/vm", #"{"state":"Paused"}"#).0 == 204)
        #expect(vm.call("GET", "/").1.contains(#""state":"Paused""#))
        let held = vm.output.count
        usleep(500_000)
        #expect(vm.output.count == held, "a paused guest printed")
        let report = vm.call("GET", "/kite/hang-report")
        #expect(report.0 == 200 && report.1.contains("vCPU 0: paused"), "\(report.1)")
        let json = vm.call("GET", "/kite/hang-report?format=json")
        #expect(json.0 == 200 && (try? JSONSerialization.jsonObject(with: Data(json.1.utf8))) != nil)
        #expect(vm.call("PATCH", "/vm", #"{"state":"Resumed"}"#).0 == 204)
        #expect(vm.waitForOutput(atLeast: held + 2), "the guest did not go on after resume")
        let (status, stderr) = vm.stop()
        #expect(status == 143, "\(stderr)")
    }

    @Test func noRequestCanCrashOrStallTheAPIOrTheGuest() throws {
        let kernel = try Self.kernel("dots2", Self.dotsForever)
        let vm = try Instance("hostile")
        #expect(vm.call("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#).0 == 204)
        #expect(vm.call("PUT", "/actions", #"{"action_type":"InstanceStart"}"#).0 == 204)
        // A client that sends half a request and stays: the others are still answered.
        let stalled = try #require(Self.connectTo(vm.socket))
        _ = Self.sendAll(stalled, Array("PUT /drives/a HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"dri".utf8))
        // More clients than the server keeps (32), all idle.
        let idle = (0..<40).compactMap { _ in Self.connectTo(vm.socket) }
        #expect(idle.count == 40)
        // An oversized body, garbage, a truncated request, bodies of the wrong types.
        let big = try #require(Self.connectTo(vm.socket))
        _ = Self.sendAll(big, Array("PUT /vsock HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".utf8) + [UInt8](repeating: 0x7B, count: 51201))
        let answer = Self.readResponse(big)
        #expect(answer.0 == 400 && answer.1.contains("larger than the limit of 51200"), "\(answer)")
        close(big)
        for garbage in [Array("\r\n\r\n".utf8), Array("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".utf8),
                        [UInt8](repeating: 0, count: 20000)] {
            guard let fd = Self.connectTo(vm.socket) else { Issue.record("cannot connect"); continue }
            _ = Self.sendAll(fd, garbage)
            #expect(Self.readResponse(fd).0 == 400, "answered, then the connection closed")
            close(fd)
        }
        if let fd = Self.connectTo(vm.socket) { _ = Self.sendAll(fd, Array("PUT /vm HTTP/1.1\r\nContent-Le".utf8)); close(fd) }
        for body in [#"{"state":5}"#, #"{"state":"Paused","x":1}"#, "[]", "null", "\"", String(repeating: "[", count: 5000)] {
            #expect(vm.call("PATCH", "/vm", body).0 == 400, "\(body.prefix(20))")
        }
        // Pipelined requests on one keep-alive connection are answered in order.
        let keep = try #require(Self.connectTo(vm.socket))
        _ = Self.sendAll(keep, Array("GET /version HTTP/1.1\r\n\r\nGET /machine-config HTTP/1.1\r\n\r\n".utf8))
        let both = Self.readResponses(keep, 2)
        #expect(both[0].1.contains("firecracker_version") && both[1].1.contains("vcpu_count"), "\(both)")
        close(keep)
        for fd in idle { close(fd) }
        close(stalled)
        #expect(vm.call("GET", "/").1.contains(#""state":"Running""#))
        let before = vm.output.count
        #expect(vm.waitForOutput(atLeast: before + 2), "the guest stopped while the API was attacked")
        let (status, stderr) = vm.stop()
        #expect(status == 143, "\(stderr)")
    }

    @Test func configFileBootsAtOnceAndDrivesCanBeSwappedAfterwards() throws {
        let kernel = try Self.kernel("cfg", Self.dotsForever)
        let placeholder = CLITests.tempPath("fc-drive0"), real = CLITests.tempPath("fc-real")
        FileManager.default.createFile(atPath: placeholder, contents: Data())
        FileManager.default.createFile(atPath: real, contents: Data(count: 4096))
        let config = try CLITests.temp("fc-config.json", Array("""
        {
        \t"boot-source": {"kernel_image_path": "\(kernel)", "boot_args": "console=ttyS0 acpi=off"},
        \t"machine-config": {"mem_size_mib": 64, "smt": false, "vcpu_count": 2},
        \t"drives": [{"drive_id": "drive_0", "path_on_host": "\(placeholder)", "is_root_device": false, "is_read_only": false}]
        }
        """.utf8))
        let vm = try Instance("config", ["--config-file", config])
        #expect(vm.call("GET", "/").1.contains(#""state":"Running""#))
        #expect(vm.waitForOutput(atLeast: 2))
        #expect(vm.call("PATCH", "/drives/drive_0", #"{"drive_id":"drive_0","path_on_host":"\#(real)"}"#).0 == 204)
        #expect(vm.call("GET", "/vm/config").1.contains(real))
        let missing = vm.call("PATCH", "/drives/drive_0", #"{"drive_id":"drive_0","path_on_host":"/nonexistent"}"#)
        #expect(missing.0 == 400 && missing.1.contains("/nonexistent"))
        #expect(vm.call("PUT", "/drives/drive_1", #"{"drive_id":"drive_1","path_on_host":"\#(real)","is_root_device":false}"#).1
                .contains("not supported after starting"))
        let (status, stderr) = vm.stop()
        #expect(status == 143, "\(stderr)")
    }

    @Test func commandLineErrorsAndExitStatusesAreFirecrackers() throws {
        let version = try CLITests.run(["firecracker", "--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("Firecracker v1.12.1\n"))
        let unknown = try CLITests.run(["firecracker", "--bogus"])
        #expect(unknown.status == 153 && unknown.stderr.contains("Found argument '--bogus'"))
        let noAPI = try CLITests.run(["firecracker", "--no-api"])
        #expect(noAPI.status == 153)
        let badConfig = try CLITests.temp("fc-bad.json", Array(#"{"boot-source":{"kernel_image_path":"/nonexistent"},"drives":[]}"#.utf8))
        let bad = try CLITests.run(["firecracker", "--no-api", "--config-file", badConfig])
        #expect(bad.status == 1 && bad.stderr.contains("/nonexistent"), "\(bad.stderr)")
        let level = try CLITests.run(["firecracker", "--level", "loud"])
        #expect(level.status == 152 && level.stderr.contains("Invalid level"))
        // A file already at the socket path: Firecracker refuses to start.
        let taken = CLITests.tempPath("fc-taken.sock")
        FileManager.default.createFile(atPath: taken, contents: Data())
        let busy = try CLITests.run(["firecracker", "--api-sock", taken])
        #expect(busy.status == 1 && busy.stderr.contains("Failed to open the API socket"), "\(busy.stderr)")
        // Started through a link named firecracker.
        let dir = CLITests.tempPath("fc-bin")
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir + "/firecracker", withDestinationPath: CLITests.kite)
        let p = Process(), out = Pipe()
        p.executableURL = URL(fileURLWithPath: dir + "/firecracker")
        p.arguments = ["--version"]
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).hasPrefix("Firecracker v1.12.1"))
    }

    /// The API thread is confined from its start, as Firecracker's is: a call outside its
    /// list (getppid, injected) ends Kite with the line that names the thread.
    @Test func theAPIThreadIsConfinedFromItsStart() throws {
        let vm = try Instance("seccomp", environment: ["KITE_INJECT": "seccomp-violation=api"])
        let (status, stderr) = vm.finish()
        #expect(status == 1, "\(stderr)")
        #expect(stderr.contains("kite: seccomp: thread kite-api made system call getppid"), "\(stderr)")
    }

    @Test func noAPIWithAConfigFileRunsToPowerOff() throws {
        let kernel = try Self.kernel("off", Run.print("bye\n") + Run.powerOff)
        let config = try CLITests.temp("fc-off.json", Array(#"{"boot-source":{"kernel_image_path":"\#(kernel)"},"drives":[],"machine-config":{"vcpu_count":1,"mem_size_mib":64}}"#.utf8))
        let vm = try Instance("noapi", ["--no-api", "--config-file", config], apiSocket: false)
        let (status, stderr) = vm.finish()
        #expect(status == 0, "\(stderr)")
        #expect(vm.output == Array("bye\n".utf8))
    }
}
