import Foundation
import Testing
@testable import Diagnosis
import JSON

@Suite struct HangReportTests {
    /// The libkrun-like hang on 4 vCPUs: vCPU 0 waits, vCPU 2 has the IPI pending but
    /// sleeps, vCPU 3 did not answer; plus the guest's reports.
    static func report(events: [KernelEvent]? = nil) -> HangReport {
        var waiter = Make.spinning(0, apic: LocalAPICState(apicID: 0, tpr: 0, ppr: 0, irr: [], icr: 0x0000_0002_0000_00fb,
                                                           timerLVT: 0x0002_00ec, timerInitialCount: 62500,
                                                           timerCurrentCount: 1200))
        waiter.events = VCPUEvents(nmiPending: true, injectedInterrupt: 0xec)
        let sleeper = Make.halted(2, irr: [0x31, 0xfb])
        let vcpus = [waiter, Make.user(1, sample: 0), sleeper, Make.notAnswering(3, entry: 41)]
        let evs = events ?? HangDiagnosisTests.vsockStallEvents
        let evidence = Make.evidence(events: evs, vcpus)
        return HangReport(trigger: "the guest reported a soft lockup on CPU 1", snapshot: evidence.samples.last!,
                          events: evs, findings: HangDiagnosis.findings(evidence), kaslrOffset: 0x1e00_0000)
    }

    static func parse(_ json: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    // MARK: Text

    @Test func textHasTheHeaderTheSummaryAndOneLinePerVCPU() {
        let r = Self.report()
        let lines = r.text().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0] == "kite: hang report (the guest reported a soft lockup on CPU 1)")
        #expect(lines[1] == "  diagnosis: " + r.summary)
        #expect(r.summary.hasPrefix("vCPU 0 spins in smp_call_function_many_cond waiting for CPUs 2 and 3; vCPU 2 is halted"))
        let vcpuLines = lines.filter { $0.hasPrefix("  vCPU ") }
        #expect(vcpuLines.count == 4)
        #expect(vcpuLines[0].hasPrefix("  vCPU 0: in the guest, runnable; RIP smp_call_function_many_cond+0xf1/0x330 RSP 0xffffb0670000bc00 RFLAGS 0x202 (IF) CR3 0x19010000 CPL 0; "))
        #expect(vcpuLines[0].contains("APIC IRR - ISR - TMR -, ICR 0x2000000fb, TPR 0x0 PPR 0x0, timer 0xec periodic 1200/62500"))
        #expect(vcpuLines[0].contains("; NMI pending, injecting 0xec; "))
        #expect(vcpuLines[0].hasSuffix("; in KVM_RUN for 0.0 s, last guest exit 0.3 s ago, 1000 exits"))
        #expect(vcpuLines[2].contains("halted; RIP default_idle+0xe/0x20"))
        #expect(vcpuLines[2].contains("APIC IRR 0x31,0xfb ISR"))
        #expect(vcpuLines[2].contains("RFLAGS 0x246 (IF)"))
        #expect(vcpuLines[3] == "  vCPU 3: in the guest, did not answer; in KVM_RUN for 41 s, last guest exit 42 s ago, 77 exits")
    }

    @Test func textShowsEachConsoleReportWithItsTopFrames() {
        let lines = Self.report().text().split(separator: "\n").map(String.init).filter { $0.hasPrefix("  console: ") }
        #expect(lines == [
            "  console: [23.27922] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "  console: [57.23662] watchdog: BUG: soft lockup - CPU#1 stuck for 52s! [swapper/0:1]; at "
                + "smp_call_function_many_cond+0xf1/0x330 < on_each_cpu_cond_mask+0x20/0x40 < "
                + "text_poke_bp_batch+0xb7/0x300 < text_poke_finish+0x1b/0x30",
        ])
    }

    @Test func textStaysShortWithManyReports() {
        let many = (0..<30).map { Make.softLockup(cpu: 1, seconds: 20 + $0, timestamp: Double(30 + $0)) }
        let text = Self.report(events: many).text()
        let lines = text.split(separator: "\n")
        #expect(lines.count <= 40)
        #expect(lines.contains("  console: 24 earlier reports not shown"))
        #expect(lines.last?.contains("stuck for 49s") == true)
    }

    @Test func textListsTheFindingsTheSummaryLeftOut() {
        // No waiter: the summary names the root cause; the loop on vCPU 1 is context.
        let evidence = Make.evidence(starvedAfter: 5, [Make.starved(0, entry: 9),
                                                       Make.spinning(1, in: "mystery_loop+0x1/0x10", rflags: 0x2)])
        let r = HangReport(trigger: "no progress for 30 s", snapshot: evidence.samples.last!, events: [],
                           findings: HangDiagnosis.findings(evidence))
        let lines = r.text().split(separator: "\n").map(String.init)
        #expect(lines[1] == "  diagnosis: vCPU 0 is runnable but its thread has not entered the guest for 9.0 s: Kite starved it (held by --inject stall-vcpu)")
        #expect(lines[2] == "  also: vCPU 1 loops in mystery_loop with interrupts disabled")
        #expect(!Self.report().text().contains("\n  also: "))
    }

    @Test func textEscapesGuestControlCharacters() {
        let hostile = KernelEvent(kind: .hungTask, task: "x\u{1b}]0;pwned\u{07}", headline: "INFO: task \u{1b}[31mred\u{9b}2J blocked\r\nfake: line")
        let text = Self.report(events: [hostile]).text()
        #expect(!text.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value) })
        #expect(text.contains("INFO: task \\x1b[31mred\\x9b2J blocked\\x0d\\x0afake: line"))
    }

    // MARK: JSON

    @Test func jsonCarriesTheDiagnosis() throws {
        let r = Self.report()
        let json = try Self.parse(r.json())
        #expect(json["trigger"] as? String == "the guest reported a soft lockup on CPU 1")
        #expect(json["summary"] as? String == r.summary)
        #expect(json["hang"] as? Bool == true)
        let findings = try #require(json["findings"] as? [[String: Any]])
        #expect(findings.count == r.findings.count)
        for (parsed, finding) in zip(findings, r.findings) {
            #expect(parsed["rule"] as? String == finding.rule.rawValue)
            #expect(parsed["vcpus"] as? [Int] == finding.vcpus)
            #expect(parsed["sentence"] as? String == finding.sentence)
        }
        #expect(json["kaslr_offset"] as? String == "0x1e000000")
        #expect(json["uptime_seconds"] as? Double == 60.4)
        #expect(json["console_quiet_seconds"] as? Double == 30)
        #expect(!r.json().contains("\n"))
    }

    @Test func jsonDescribesEveryVCPU() throws {
        let vcpus = try #require(Self.parse(Self.report().json())["vcpus"] as? [[String: Any]])
        #expect(vcpus.count == 4)
        let v0 = vcpus[0]
        #expect(v0["id"] as? Int == 0)
        #expect(v0["thread"] as? String == "in the guest")
        #expect(v0["answered"] as? Bool == true)
        #expect(v0["mp_state"] as? String == "runnable")
        #expect(v0["rip"] as? String == "0xffffffff811230f1")
        #expect(v0["rip_symbol"] as? String == "smp_call_function_many_cond+0xf1/0x330")
        #expect(v0["rsp"] as? String == "0xffffb0670000bc00")
        #expect(v0["rflags"] as? String == "0x202")
        #expect(v0["cr3"] as? String == "0x19010000")
        #expect(v0["cpl"] as? Int == 0)
        #expect(v0["interrupts_enabled"] as? Bool == true)
        #expect(v0["seconds_since_entry"] as? Double == 0.01)
        #expect(v0["seconds_since_exit"] as? Double == 0.3)
        #expect(v0["exits"] as? Int == 1000)
        #expect(v0.keys.contains("kvm_exits"))   // null: the hand-made vCPU has no KVM count
        let apic = try #require(v0["apic"] as? [String: Any])
        #expect(apic["icr"] as? String == "0x2000000fb")
        #expect(apic["icr_send_pending"] as? Bool == false)
        #expect(apic["timer_lvt"] as? String == "0x200ec")
        #expect(apic["timer_masked"] as? Bool == false)
        #expect(apic["timer_initial"] as? Int == 62500)
        #expect(apic["timer_current"] as? Int == 1200)
        #expect(apic["irr"] as? [Int] == [])
        let events = try #require(v0["events"] as? [String: Any])
        #expect(events["nmi_pending"] as? Bool == true)
        #expect(events["nmi_injected"] as? Bool == false)
        #expect(events["injected_interrupt"] as? Int == 0xec)
        #expect(events["exception"] is NSNull)

        #expect((vcpus[2]["apic"] as? [String: Any])?["irr"] as? [Int] == [0x31, 0xfb])
        #expect((vcpus[2]["apic"] as? [String: Any])?["id"] as? Int == 2)
        #expect(vcpus[2]["mp_state"] as? String == "halted")
        #expect(vcpus[1]["cpl"] as? Int == 3)
        #expect(vcpus[1]["rip_symbol"] is NSNull)

        let v3 = vcpus[3]
        #expect(v3["answered"] as? Bool == false)
        #expect(v3["seconds_since_entry"] as? Double == 41)
        for key in ["mp_state", "rip", "rip_symbol", "rsp", "rflags", "cr3", "cpl", "interrupts_enabled", "apic", "events"] {
            #expect(v3[key] is NSNull, "\(key)")
        }
    }

    @Test func jsonCarriesTheConsoleReports() throws {
        let events = try #require(Self.parse(Self.report().json())["console_events"] as? [[String: Any]])
        #expect(events.count == 2)
        let rcu = events[0], lockup = events[1]
        #expect(rcu["kind"] as? String == "RCU stall")
        #expect(rcu["stalled_cpus"] as? [Int] == [0])
        #expect(rcu["detected_by"] as? Int == 1)
        #expect(rcu["cpu"] is NSNull)
        #expect(rcu["rip"] is NSNull)
        #expect(lockup["kind"] as? String == "soft lockup")
        #expect(lockup["timestamp"] as? Double == 57.23662)
        #expect(lockup["cpu"] as? Int == 1)
        #expect(lockup["stuck_seconds"] as? Int == 52)
        #expect(lockup["task"] as? String == "swapper/0")
        #expect(lockup["pid"] as? Int == 1)
        let rip = try #require(lockup["rip"] as? [String: Any])
        #expect(rip["function"] as? String == "smp_call_function_many_cond")
        #expect(rip["offset"] as? String == "0xf1")
        #expect(rip["size"] as? String == "0x330")
        #expect(rip["module"] is NSNull)
        let frames = try #require(lockup["frames"] as? [[String: Any]])
        #expect(frames.count == 5)
        #expect(frames[0]["reliable"] as? Bool == false)
        #expect(frames[1]["function"] as? String == "on_each_cpu_cond_mask")
    }

    @Test func jsonSurvivesHostileGuestText() throws {
        let nasty = "quote\" back\\slash \n newline \r\t tab \u{0}nul \u{1}\u{1f}\u{7f} esc\u{1b}[2J \u{2028}\u{2029} é 🐧 \\u0041 </script>"
        let event = KernelEvent(kind: .hungTask, task: nasty, pid: 634, headline: nasty,
                                rip: KernelFrame(function: nasty, offset: .max, size: 1, module: nasty))
        let r = Self.report(events: [event])
        let text = r.json()
        let json = try Self.parse(text)
        let parsed = try #require((json["console_events"] as? [[String: Any]])?.first)
        #expect(parsed["headline"] as? String == nasty)
        #expect(parsed["task"] as? String == nasty)
        let rip = try #require(parsed["rip"] as? [String: Any])
        #expect(rip["function"] as? String == nasty)
        #expect(rip["module"] as? String == nasty)
        #expect(rip["offset"] as? String == "0xffffffffffffffff")
        // The text itself has no raw control characters or line separators.
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f || $0.value == 0x2028 || $0.value == 0x2029 })
    }

    @Test func jsonOfAnIdleGuestSaysNoHang() throws {
        let evidence = Make.evidence([Make.halted(0), Make.halted(1)])
        let r = HangReport(trigger: "requested (kite inspect)", snapshot: evidence.samples.last!, events: [],
                           findings: HangDiagnosis.findings(evidence))
        let json = try Self.parse(r.json())
        #expect(json["hang"] as? Bool == false)
        #expect(json["kaslr_offset"] is NSNull)
        #expect((json["findings"] as? [[String: Any]])?.first?["rule"] as? String == "all-idle")
        #expect(!r.isHang)
    }

    @Test func reportsSayWhereTheNamesCameFrom() throws {
        let evidence = Make.evidence([Make.halted(0)])
        let plain = HangReport(trigger: "requested (kite inspect)", snapshot: evidence.samples.last!, events: [],
                               findings: HangDiagnosis.findings(evidence))
        #expect(!plain.text().contains("symbols:"))
        #expect(try Self.parse(plain.json())["symbols"] is NSNull)
        let kallsyms = HangReport(trigger: "requested (kite inspect)", snapshot: evidence.samples.last!, events: [],
                                  findings: HangDiagnosis.findings(evidence), symbolSource: "kallsyms in guest memory")
        #expect(kallsyms.text().split(separator: "\n").last == "  symbols: kallsyms in guest memory")
        let json = try Self.parse(kallsyms.json())
        #expect(json["symbols"] as? String == "kallsyms in guest memory")
        #expect(json["kaslr_offset"] is NSNull)
        let file = HangReport(trigger: "requested (kite inspect)", snapshot: evidence.samples.last!, events: [],
                              findings: HangDiagnosis.findings(evidence), kaslrOffset: 0x1e00_0000,
                              symbolSource: "/boot/System.map-6.1.0-57-cloud-amd64\u{1b}[31m")
        #expect(file.text().split(separator: "\n").last?.hasPrefix("  symbols: /boot/System.map-6.1.0-57-cloud-amd64") == true)
        #expect(!file.text().contains("\u{1b}"))
        #expect(try Self.parse(file.json())["kaslr_offset"] as? String == "0x1e000000")
        #expect(try Self.parse(file.json())["symbols"] as? String == "/boot/System.map-6.1.0-57-cloud-amd64\u{1b}[31m")
    }

    // MARK: The real hang, end to end

    @Test func theVsockStallLogDiagnosedFromItsOwnConsole() throws {
        // Kite's test bed, 2 vCPUs: the console as the guest printed it, parsed by
        // ConsoleWatcher; vCPU 0 was held out of the guest, vCPU 1 spun in
        // smp_call_function_many_cond (no symbols: the function comes from the console).
        let url = try #require(Bundle.module.url(forResource: "kite-vsock2-stall.log", withExtension: nil, subdirectory: "Fixtures"))
        let events = ConsoleWatcher.events(in: try String(contentsOf: url, encoding: .utf8))
        #expect(events.contains { $0.kind == .rcuStall && $0.stalledCPUs == [0] })
        let evidence = Make.evidence(events: events, starvedAfter: 15) { i in
            [Make.starved(0, thread: .handlingExit, entry: 140 + Double(i) * 0.2),
             Make.spinning(1, in: nil, rip: 0xffff_ffff_8d12_30f1 - UInt64(i) * 6)]
        }
        let report = HangReport(trigger: "no progress on the console for 30 s", snapshot: evidence.samples.last!,
                                events: events, findings: HangDiagnosis.findings(evidence))
        #expect(report.summary == "vCPU 1 spins in smp_call_function_many_cond (per the guest's console) waiting for CPU 0; "
            + "vCPU 0 is runnable but its thread has not entered the guest for 140 s: Kite starved it")
        #expect(report.isHang)
        let text = report.text()
        #expect(text.split(separator: "\n").count <= 40)
        #expect(text.contains("soft lockup - CPU#1 stuck for 171s! [swapper/0:1]; at smp_call_function_many_cond+0xf1/0x330 < on_each_cpu_cond_mask+0x20/0x40"))
        let json = try Self.parse(report.json())
        #expect((json["console_events"] as? [[String: Any]])?.count == events.count)
    }

    // MARK: The writer itself

    @Test func writerEscapesStrings() {
        #expect(JSONWriter.quoted("a\"b\\c") == #""a\"b\\c""#)
        #expect(JSONWriter.quoted("\n\r\t\u{8}\u{c}") == #""\n\r\t\b\f""#)
        #expect(JSONWriter.quoted("\u{0}\u{1b}\u{7f}\u{2028}") == #""\u0000\u001b\u007f\u2028""#)
        #expect(JSONWriter.quoted("é🐧/") == "\"é🐧/\"")
    }

    @Test func writerWritesNumbersAndStructure() {
        let value = JSONValue.object([
            ("a", .array([.integer(-3), .number(1.5), .number(.nan), .number(.infinity), .null, .bool(true)])),
            ("b", .object([])), ("c", .array([])), ("d", .hex(.max)),
        ])
        #expect(JSONWriter.write(value) == #"{"a":[-3,1.5,null,null,null,true],"b":{},"c":[],"d":"0xffffffffffffffff"}"#)
    }
}
