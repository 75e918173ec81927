import Foundation
import Testing
@testable import FirecrackerAPI
import JSON

/// JSON reading, HTTP framing, routing, schemas and the pre/post-boot rules of Kite's
/// Firecracker API, without a socket or a VM (FirecrackerEndToEndTests has those).
struct JSONReaderTests {
    @Test func readsEveryKindOfValue() throws {
        let v = try JSONReader.read(#" {"a": [1, -2, 3.5, 1e3, true, false, null], "b": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\udc27", "c": {}} "#)
        #expect(JSONWriter.write(v) == #"{"a":[1,-2,3.5,1000.0,true,false,null],"b":"x\"\\/\b\f\n\r\t"# + "é🐧" + #"","c":{}}"#)
    }

    @Test(arguments: [
        ("", "EOF while parsing a value at line 1 column 0"),
        ("{", "EOF while parsing an object at line 1 column 1"),
        ("{\"a\":1,}", "key must be a string at line 1 column 8"),
        ("[1 2]", "expected `,` or `]` at line 1 column 4"),
        ("{} x", "trailing characters at line 1 column 4"),
        ("01", "trailing characters at line 1 column 2"),
        ("1.", "invalid number at line 1 column 2"),
        ("-", "invalid number at line 1 column 1"),
        ("tru", "expected ident at line 1 column 3"),
        ("\"\\x\"", "invalid escape at line 1 column 3"),
        ("\"\\ud800\"", "lone leading surrogate in hex escape at line 1 column 8"),
        ("\"\\udc00\"", "lone trailing surrogate in hex escape at line 1 column 7"),
        ("\"a\nb\"", "control character (\\u0000-\\u001F) found while parsing a string at line 2 column 0"),
        ("1e999", "number out of range at line 1 column 5"),
    ])
    func refusesWhatIsNotJSON(text: String, message: String) {
        #expect(throws: JSONReadError.self) { try JSONReader.read(text) }
        do { _ = try JSONReader.read(text) } catch { #expect(error.description == message) }
    }

    @Test func refusesInvalidUTF8AndDeepNesting() {
        #expect(throws: JSONReadError.self) { try JSONReader.read([0x22, 0xFF, 0x22]) }
        let deep = String(repeating: "[", count: JSONReader.maxDepth + 1) + String(repeating: "]", count: JSONReader.maxDepth + 1)
        #expect(throws: JSONReadError.self) { try JSONReader.read(deep) }
        let fine = String(repeating: "[", count: JSONReader.maxDepth) + String(repeating: "]", count: JSONReader.maxDepth)
        #expect(throws: Never.self) { try JSONReader.read(fine) }
    }

    @Test func randomBytesNeverCrashTheReader() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("{}[]\",:0123456789.eE+-truefalsnl\\u \n".utf8) + [0xFF, 0xC3]
        for _ in 0..<5000 {
            let bytes = (0..<Int.random(in: 0..<40, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            _ = try? JSONReader.read(bytes)
        }
    }
}

struct HTTPTests {
    static func request(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func readsPipelinedRequestsSplitAnywhere() {
        let wire = Self.request("PUT /drives/a HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET /?x=1 HTTP/1.1\r\n\r\n")
        for split in 0...wire.count {
            var reader = HTTPRequestReader()
            var got: [HTTPRequestReader.Event] = []
            reader.append(wire[..<split])
            while let e = reader.next() { got.append(e) }
            reader.append(wire[split...])
            while let e = reader.next() { got.append(e) }
            #expect(got == [.request(HTTPRequest(method: "PUT", path: "/drives/a", body: Array("{\"a\":1}".utf8))),
                            .request(HTTPRequest(method: "GET", path: "/", query: "x=1"))], "split at \(split)")
        }
    }

    @Test func aHeadArrivingAByteAtATimeIsFoundOnceComplete() {
        var r = HTTPRequestReader()
        for byte in Self.request("GET /version HTTP/1.1\r\nHost: x\r\n\r\n") {
            #expect(r.next() == nil)          // asking again with nothing new is harmless
            r.append([byte])
        }
        #expect(r.next() == .request(HTTPRequest(method: "GET", path: "/version")))
        #expect(r.next() == nil)
    }

    @Test func limitsBodyAndHeadAndRefusesChunkedBodies() {
        var big = HTTPRequestReader(maxBodyBytes: 10)
        big.append(Self.request("PUT / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"))
        #expect(big.next() == .failed("Request payload with size 11 is larger than the limit of 10 allowed by server."))
        var head = HTTPRequestReader()
        head.append([UInt8](repeating: 0x41, count: HTTPRequestReader.maxHeadBytes + 1))
        #expect(head.next() == .failed("Request head is longer than \(HTTPRequestReader.maxHeadBytes) bytes."))
        var chunked = HTTPRequestReader()
        chunked.append(Self.request("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
        #expect(chunked.next() == .failed("Invalid header. Reason: Unsupported transfer encoding: chunked"))
        for bad in ["GET\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
                    "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"] {
            var r = HTTPRequestReader()
            r.append(Self.request(bad))
            guard case .failed = r.next() else { Issue.record("accepted \(bad.debugDescription)"); continue }
        }
    }

    @Test func answersExpectContinueAndHonoursConnectionClose() {
        var r = HTTPRequestReader()
        r.append(Self.request("PUT /vsock HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"))
        #expect(r.next() == .sendContinue)
        #expect(r.next() == nil)
        #expect(r.isReadingBody)
        r.append(Self.request("{}"))
        #expect(r.next() == .request(HTTPRequest(method: "PUT", path: "/vsock", body: Array("{}".utf8), closeAfter: true)))
        var old = HTTPRequestReader()
        old.append(Self.request("GET / HTTP/1.0\r\n\r\n"))
        #expect(old.next() == .request(HTTPRequest(method: "GET", path: "/", closeAfter: true)))
    }

    @Test func responsesAreFirecrackersBytes() {
        #expect(String(decoding: HTTPResponse.noContent.bytes, as: UTF8.self)
                == "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n")
        #expect(String(decoding: HTTPResponse.fault("no").bytes, as: UTF8.self)
                == "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
                + "Content-Length: 22\r\n\r\n{\"fault_message\":\"no\"}")
    }
}

/// A backend that records what it was asked.
final class RecordingBackend: FirecrackerBackend, @unchecked Sendable {
    var started: [VMResources] = []
    var calls: [String] = []
    var failStart: String?
    func start(_ resources: VMResources) -> String? { started.append(resources); return failStart }
    func pause() -> String? { calls.append("pause"); return nil }
    func resume() -> String? { calls.append("resume"); return nil }
    func sendCtrlAltDel() -> String? { calls.append("ctrl-alt-del"); return nil }
    func updateDrive(index: Int, path: String) -> String? { calls.append("drive \(index) \(path)"); return nil }
    var metricsWritten: [String] = []
    var blockReads = 0
    func machineMetrics() -> [(group: String, counters: [(name: String, value: Int)])] { [("block", [("read_count", blockReads)])] }
    func writeMetrics(_ line: String) -> String? { calls.append("metrics"); metricsWritten.append(line); return nil }
    func hangReport(json: Bool) -> Result<String, HangReportUnavailable> { .success(json ? "{}" : "report") }
}

struct FirecrackerVMMTests {
    let kernel: String
    let disk: String
    let backend = RecordingBackend()
    let vmm: FirecrackerVMM

    init() throws {
        kernel = CLITests.tempPath("fc-kernel")
        disk = CLITests.tempPath("fc-disk")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: kernel))
        try Data().write(to: URL(fileURLWithPath: disk))
        vmm = FirecrackerVMM(instanceID: "vm1", backend: backend)
    }

    func send(_ method: String, _ path: String, _ body: String? = nil) -> (Int, String) {
        let r = vmm.respond(to: HTTPRequest(method: method, path: path, body: Array((body ?? "").utf8)))
        return (r.status, String(decoding: r.body, as: UTF8.self))
    }

    func fault(_ r: (Int, String)) -> String? {
        guard r.0 == 400, case .object(let m)? = try? JSONReader.read(r.1), m.count == 1,
              case .string(let s) = m[0].value, m[0].key == "fault_message" else { return nil }
        return s
    }

    @Test func routesEveryEndpointAndRefusesUnknownOnes() {
        #expect(send("GET", "/").1 == #"{"id":"vm1","state":"Not started","vmm_version":"1.12.1","app_name":"Kite"}"#)
        #expect(send("GET", "/version").1 == #"{"firecracker_version":"1.12.1"}"#)
        #expect(send("GET", "/machine-config").1
                == #"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#)
        #expect(fault(send("GET", "/foo")) == "Invalid request method and/or path: GET foo.")
        #expect(fault(send("DELETE", "/drives/a")) == "Invalid request method and/or path: DELETE drives.")
        #expect(fault(send("GET", "/", "{}")) == "GET request cannot have a body.")
        #expect(fault(send("PUT", "/boot-source")) == "Empty PUT request.")
        #expect(fault(send("PATCH", "/machine-config")) == "Empty PATCH request.")
        #expect(fault(send("PATCH", "/machine-config", "{}")) == "Empty PATCH request.")
        #expect(fault(send("PUT", "/drives", "{}")) == "The ID cannot be empty.")
        #expect(fault(send("PUT", "/drives/a-b", "{}")) == "API Resource IDs can only contain alphanumeric characters and underscores.")
        #expect(fault(send("PUT", "/drives/a", #"{"drive_id":"b","is_root_device":false,"path_on_host":"x"}"#))
                == "The id from the path does not match the id from the body!")
        #expect(fault(send("PUT", "/network-interfaces/a", #"{"iface_id":"b","host_dev_name":"t"}"#))
                == "The id from the path [a] does not match the id from the body [b]!")
        #expect(fault(send("PUT", "/mmds", "{}"))?.contains("no MMDS") == true)
        #expect(fault(send("PUT", "/balloon", "{}"))?.contains("no balloon") == true)
        #expect(fault(send("PUT", "/snapshot/create", "{}"))?.contains("no snapshots") == true)
    }

    @Test func bodiesAreCheckedAsFirecrackersSchemaSays() {
        let prefix = "An error occurred when deserializing the json body of a request: "
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":2}"#)) == prefix + "missing field `mem_size_mib`.")
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":"2","mem_size_mib":1}"#))
                == prefix + #"invalid type: string "2", expected u8."#)
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":256,"mem_size_mib":1}"#))
                == prefix + "invalid value: integer `256`, expected u8.")
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":33,"mem_size_mib":1}"#))
                == "The vCPU number is invalid: it should be either 1 or an even number when SMT is enabled.")
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":1,"mem_size_mib":1,"vcpus":1}"#))?.hasPrefix(prefix + "unknown field `vcpus`") == true)
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":1,"mem_size_mib":1,"vcpu_count":2}"#)) == prefix + "duplicate field `vcpu_count`.")
        #expect(fault(send("PUT", "/machine-config", #"{"vcpu_count":1,"mem_size_mib":1,"cpu_template":"T2"}"#))?.contains("no CPU templates") == true)
        #expect(fault(send("PUT", "/machine-config", "[1]")) == prefix + "invalid type: a sequence, expected a map.")
        #expect(fault(send("PUT", "/machine-config", "{")) == prefix + "EOF while parsing an object at line 1 column 1.")
        #expect(fault(send("PUT", "/actions", #"{"action_type":"Reboot"}"#))
                == prefix + "unknown variant `Reboot`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`.")
        #expect(fault(send("PUT", "/vsock", #"{"guest_cid":2,"uds_path":"/x"}"#))?.contains("at least 3") == true)
        #expect(fault(send("PUT", "/network-interfaces/a", #"{"iface_id":"a","host_dev_name":"t","rx_rate_limiter":{"bandwidth":{"size":10,"refill_time":100}}}"#))?.contains("no rate limiters") == true)
        // Accepted as Kata and the Go SDK send them: nulls, {} rate limiters, vsock_id, Warning.
        #expect(send("PUT", "/machine-config", #"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"cpu_template":null,"track_dirty_pages":null}"#).0 == 204)
        #expect(send("PUT", "/network-interfaces/eth0", #"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"02:00:00:00:00:01","rx_rate_limiter":{},"tx_rate_limiter":{}}"#).0 == 204)
        #expect(send("PUT", "/vsock", #"{"guest_cid":3,"uds_path":"/tmp/v.sock","vsock_id":"root"}"# + "\n").0 == 204)
        #expect(send("PUT", "/logger", #"{"level":"Warning","show_level":true}"#).0 == 204)
        #expect(send("PATCH", "/machine-config", #"{"vcpu_count":4}"#).0 == 204)
        #expect(vmm.resources.machine.vcpuCount == 4 && vmm.resources.machine.memSizeMiB == 256)
    }

    @Test func drivesKeepOrderWithTheRootFirstAndMakeTheCommandLine() {
        for id in ["drive_0", "rootfs", "drive_1"] {
            let body = #"{"drive_id":"\#(id)","path_on_host":"\#(disk)","is_root_device":\#(id == "rootfs"),"is_read_only":\#(id == "rootfs")}"#
            #expect(send("PUT", "/drives/\(id)", body).0 == 204)
        }
        #expect(vmm.resources.drives.map(\.driveID) == ["rootfs", "drive_0", "drive_1"])
        // PUT again, a drive keeps its place (the guest's vdX names follow the order).
        #expect(send("PUT", "/drives/drive_0", #"{"drive_id":"drive_0","path_on_host":"\#(disk)","is_root_device":false,"is_read_only":true}"#).0 == 204)
        #expect(vmm.resources.drives.map(\.driveID) == ["rootfs", "drive_0", "drive_1"] && vmm.resources.drives[1].isReadOnly)
        #expect(fault(send("PUT", "/drives/root2", #"{"drive_id":"root2","path_on_host":"\#(disk)","is_root_device":true}"#))
                == "A root block device already exists!")
        #expect(fault(send("PUT", "/drives/x", #"{"drive_id":"x","path_on_host":"/nonexistent/x","is_root_device":false}"#))?
                .hasPrefix("Unable to open the block device backing file (/nonexistent/x)") == true)
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#).0 == 204)
        #expect(vmm.resources.kernelCommandLine == VMResources.defaultBootArgs + " root=/dev/vda ro")
        #expect(fault(send("PUT", "/boot-source", #"{"kernel_image_path":"/nonexistent"}"#))?.hasPrefix("Boot source error") == true)
    }

    @Test func whatIsAllowedBeforeAndAfterInstanceStart() {
        let before = "The requested operation is not supported before starting the microVM."
        let after = "The requested operation is not supported after starting the microVM."
        #expect(fault(send("PATCH", "/vm", #"{"state":"Paused"}"#)) == before)
        #expect(fault(send("PATCH", "/drives/a", #"{"drive_id":"a","path_on_host":"x"}"#)) == before)
        #expect(fault(send("PUT", "/actions", #"{"action_type":"SendCtrlAltDel"}"#)) == before)
        #expect(fault(send("PUT", "/actions", #"{"action_type":"FlushMetrics"}"#)) == before)
        #expect(fault(send("GET", "/kite/hang-report")) == before)
        #expect(fault(send("PUT", "/actions", #"{"action_type":"InstanceStart"}"#))
                == "Start microvm error: Cannot start microvm without kernel configuration.")
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#).0 == 204)
        #expect(send("PUT", "/drives/d", #"{"drive_id":"d","path_on_host":"\#(disk)","is_root_device":false}"#).0 == 204)
        backend.failStart = "no /dev/kvm"
        #expect(fault(send("PUT", "/actions", #"{"action_type":"InstanceStart"}"#)) == "Start microvm error: no /dev/kvm")
        #expect(vmm.state == .notStarted)
        backend.failStart = nil
        #expect(send("PUT", "/actions", #"{"action_type":"InstanceStart"}"#).0 == 204)
        #expect(vmm.state == .running)
        #expect(backend.started.count == 2)
        for (path, body) in [("/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#), ("/machine-config", #"{"vcpu_count":1,"mem_size_mib":64}"#),
                             ("/drives/e", #"{"drive_id":"e","path_on_host":"\#(disk)","is_root_device":false}"#),
                             ("/vsock", #"{"guest_cid":3,"uds_path":"/x"}"#), ("/actions", #"{"action_type":"InstanceStart"}"#)] {
            #expect(fault(send("PUT", path, body)) == after, "PUT \(path)")
        }
        #expect(send("PATCH", "/vm", #"{"state":"Paused"}"#).0 == 204)
        #expect(send("GET", "/").1.contains(#""state":"Paused""#))
        #expect(send("PATCH", "/vm", #"{"state":"Resumed"}"#).0 == 204)
        #expect(send("GET", "/").1.contains(#""state":"Running""#))
        #expect(send("PATCH", "/drives/d", #"{"drive_id":"d","path_on_host":"\#(kernel)"}"#).0 == 204)
        #expect(fault(send("PATCH", "/drives/zz", #"{"drive_id":"zz","path_on_host":"\#(kernel)"}"#))?.contains("does not exist") == true)
        #expect(send("PUT", "/actions", #"{"action_type":"SendCtrlAltDel"}"#).0 == 204)
        #expect(send("PUT", "/actions", #"{"action_type":"FlushMetrics"}"#).0 == 204)
        #expect(send("GET", "/kite/hang-report") == (200, "report"))
        #expect(backend.calls == ["pause", "resume", "drive 0 \(kernel)", "ctrl-alt-del", "metrics"])
        #expect(vmm.resources.drives[0].pathOnHost == kernel)
    }

    /// FlushMetrics: the API's and the machine's counters under Firecracker's names, each the
    /// change since the last flush.
    @Test func metricsReportWhatHappenedSinceTheLastFlush() throws {
        #expect(send("PUT", "/boot-source", #"{"kernel_image_path":"\#(kernel)"}"#).0 == 204)
        #expect(send("PUT", "/drives/d", #"{"drive_id":"d","is_root_device":false}"#).0 == 400)
        #expect(send("PUT", "/actions", #"{"action_type":"InstanceStart"}"#).0 == 204)
        backend.blockReads = 7
        #expect(send("PUT", "/actions", #"{"action_type":"FlushMetrics"}"#).0 == 204)
        backend.blockReads = 10
        #expect(send("GET", "/").0 == 200)
        #expect(send("PUT", "/actions", #"{"action_type":"FlushMetrics"}"#).0 == 204)
        let lines = try backend.metricsWritten.map { try JSONReader.read($0) }
        #expect(lines.count == 2 && backend.metricsWritten.allSatisfy { $0.hasSuffix("}\n") })
        func counter(_ line: JSONValue, _ group: String, _ name: String) -> Int? {
            if case .integer(let n)? = line[group]?[name] { return n }
            return nil
        }
        #expect(counter(lines[0], "put_api_requests", "boot_source_count") == 1)
        #expect(counter(lines[0], "put_api_requests", "drive_count") == 1)
        #expect(counter(lines[0], "put_api_requests", "drive_fails") == 1)
        #expect(counter(lines[0], "put_api_requests", "actions_count") == 1, "the flush itself is counted after it is answered")
        #expect(counter(lines[0], "block", "read_count") == 7)
        #expect(counter(lines[1], "block", "read_count") == 3)
        #expect(counter(lines[1], "put_api_requests", "boot_source_count") == 0)
        #expect(counter(lines[1], "put_api_requests", "actions_count") == 1)
        #expect(counter(lines[1], "get_api_requests", "instance_info_count") == 1)
        if case .integer(let t)? = lines[1]["utc_timestamp_ms"] { #expect(t > 1_700_000_000_000) } else { Issue.record("no time stamp") }
    }

    @Test func metricsCanBeSetOnce() {
        let path = CLITests.tempPath("fc-metrics")
        #expect(send("PUT", "/metrics", #"{"metrics_path":"\#(path)","extra":1}"#).0 == 204)
        #expect(fault(send("PUT", "/metrics", #"{"metrics_path":"\#(path)"}"#))
                == "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.")
    }

    /// Kata's Go runtime writes this file (its fcConfig.json, tabs and all).
    @Test func katasConfigFileIsTheSameAsItsRequests() throws {
        let fifo = CLITests.tempPath("fc-log")
        let text = """
        {
        \t"boot-source": {"kernel_image_path": "\(kernel)", "boot_args": "console=ttyS0 acpi=off"},
        \t"machine-config": {"mem_size_mib": 2048, "smt": false, "vcpu_count": 1},
        \t"vsock": {"guest_cid": 3, "uds_path": "/run/kata/root/kata.hvsock", "vsock_id": "root"},
        \t"logger": {"level": "Error", "log_path": "\(fifo)"},
        \t"drives": [
        \t\t{"drive_id": "rootfs", "path_on_host": "\(disk)", "is_root_device": false, "is_read_only": true},
        \t\t{"drive_id": "drive_0", "path_on_host": "\(disk)", "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"}
        \t],
        \t"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0_kata", "guest_mac": "02:42:ac:11:00:02", "rx_rate_limiter": {}, "tx_rate_limiter": {}}],
        \t"unknown-top-level-key": 1
        }
        """
        try vmm.applyConfigFile(Array(text.utf8))
        let r = vmm.resources
        #expect(r.machine.memSizeMiB == 2048 && r.drives.map(\.driveID) == ["rootfs", "drive_0"])
        #expect(r.vsock == Vsock(guestCID: 3, udsPath: "/run/kata/root/kata.hvsock", vsockID: "root"))
        #expect(r.networkInterfaces.map(\.hostDevName) == ["tap0_kata"] && r.logger?.level == "Error")
        #expect(r.kernelCommandLine == "console=ttyS0 acpi=off")
        let bad = FirecrackerVMM(instanceID: "x", backend: backend)
        #expect(throws: SchemaError("Invalid config file: missing field `boot-source`")) { try bad.applyConfigFile(Array("{}".utf8)) }
        #expect(throws: SchemaError.self) { try bad.applyConfigFile(Array(#"{"boot-source":{"kernel_image_path":"\#(kernel)"},"drives":[],"balloon":{}}"#.utf8)) }
        #expect(throws: SchemaError.self) { try bad.applyConfigFile(Array("not json".utf8)) }
    }
}

struct FirecrackerCommandLineTests {
    @Test func readsWhatKataAndTheGoSDKPass() throws {
        let line = try FirecrackerCommandLine.parse(["--api-sock", "/run/fc.sock", "--id", "4e6f-a1", "--config-file", "c.json",
                                                     "--no-seccomp", "--level", "Debug", "--boot-timer", "--start-time-us", "12"])
        #expect(line.apiSocket == "/run/fc.sock" && line.instanceID == "4e6f-a1" && line.configFile == "c.json")
        #expect(line.noSeccomp && line.bootTimer && line.level == "Debug")
        #expect(try FirecrackerCommandLine.parse(["--version", "--bogus"]).showVersion)
        #expect(try FirecrackerCommandLine.parse(["-h"]).showHelp)
        #expect(try FirecrackerCommandLine.parse(["--", "--anything"]) == FirecrackerCommandLine())
    }

    @Test(arguments: [
        (["--foo"], "Found argument '--foo' which wasn't expected, or isn't valid in this context."),
        (["--api-sock=/x"], "Found argument '--api-sock=/x' which wasn't expected, or isn't valid in this context."),
        (["x"], "Found argument 'x' which wasn't expected, or isn't valid in this context."),
        (["--api-sock"], "The argument '--api-sock' requires a value, but none was supplied."),
        (["--api-sock", "--id"], "The argument '--api-sock' requires a value, but none was supplied."),
        (["--id", "a", "--id", "b"], "The argument '--id' was provided more than once."),
        (["--no-api"], "Missing argument: config-file. Arguments required by 'no-api' need to be provided."),
        (["--id", "a_b"], "Invalid instance ID: 'a_b' (1 to 64 letters, digits or '-')"),
        (["--start-time-us", "-1"], "Invalid value for --start-time-us: '-1' is not a non-negative integer"),
    ])
    func refusesWhatFirecrackerRefuses(arguments: [String], message: String) {
        #expect(throws: SchemaError(message)) { try FirecrackerCommandLine.parse(arguments) }
    }

    @Test func aBadLevelIsAConfigurationError() throws {
        let line = try FirecrackerCommandLine.parse(["--level", "loud"])
        #expect(throws: SchemaError("Invalid level: loud. Valid levels: Error, Warning, Info, Debug, Trace, Off")) { try line.checkLevel() }
        #expect(throws: Never.self) { try FirecrackerCommandLine.parse(["--level", "warn"]).checkLevel() }
    }

    @Test func versionLineIsWhatKataParses() {
        // Kata: the first line's second word, less its "v", must be semver >= 0.21.1.
        let first = FirecrackerCommandLine.versionText.split(separator: "\n")[0].split(separator: " ")
        #expect(first.count == 2 && first[1] == "v1.12.1")
    }
}
