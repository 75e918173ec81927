import Foundation
import Testing

@testable import ACPI

// MARK: - Fixtures and helpers

private let tablesBase: UInt64 = 0xE0000

private func vcpuConfig(_ count: Int) -> ACPIConfig {
    ACPIConfig(apicIDs: (0..<count).map { UInt32($0) })
}

/// 300 vCPUs (so both LAPIC and x2APIC entries), one virtio-mmio device below 4 GiB and
/// one above.
private func fullConfig() -> ACPIConfig {
    var config = vcpuConfig(300)
    config.includesKeyboardController = true
    config.mmioDevices = [
        ACPIMMIODevice(name: "VR00", uid: 0, base: 0xD000_0000, length: 0x1000, gsi: 5),
        ACPIMMIODevice(name: "VR01", uid: 1, base: 0x10_0000_0000, length: 0x1000, gsi: 16),
    ]
    return config
}

private func table(_ tables: ACPITables, at address: UInt64) throws -> [UInt8] {
    try #require(tables.table(at: address), "no table at \(String(address, radix: 16))")
}

private func signature(of table: [UInt8]) -> String {
    table.loadASCII(at: 0, width: 4)
}

/// MADT interrupt controller structures as (type, bytes) pairs; records an issue if the
/// structures do not exactly fill the table.
private func madtEntries(_ madt: [UInt8]) -> [(type: UInt8, bytes: [UInt8])] {
    var entries: [(type: UInt8, bytes: [UInt8])] = []
    var offset = MADT.Offset.firstEntry
    while offset < madt.count {
        guard offset + 2 <= madt.count, madt[offset + 1] >= 2, offset + Int(madt[offset + 1]) <= madt.count else {
            Issue.record("malformed MADT entry at offset \(offset)")
            return entries
        }
        let length = Int(madt[offset + 1])
        entries.append((madt[offset], Array(madt[offset..<(offset + length)])))
        offset += length
    }
    return entries
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, needle.count <= haystack.count else { return needle.isEmpty }
    return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
}

private func occurrences(of needle: String, in text: String) -> Int {
    text.components(separatedBy: needle).count - 1
}

/// Full path of `tool` on PATH (plus the usual system directories).
private func findExecutable(_ tool: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/bin"]
    return directories.map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs `executable` in `directory`; returns its exit status and combined stdout+stderr.
private func run(_ executable: String, _ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

private func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kite-acpi-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Writes XSDT, FACP, DSDT and APIC of `tables` as separate files (iasl cannot load a bare RSDP).
private func writeTables(_ tables: ACPITables, to directory: URL) throws -> [String: String] {
    var files: [String: String] = [:]
    for (name, address) in [("xsdt", tables.xsdtAddress), ("facp", tables.fadtAddress),
                            ("dsdt", tables.dsdtAddress), ("apic", tables.madtAddress)] {
        let file = "\(name).dat"
        try Data(try table(tables, at: address)).write(to: directory.appendingPathComponent(file))
        files[name] = file
    }
    return files
}

private let installHint = "install acpica-tools (apt-get install acpica-tools); CI installs it"

// MARK: - Checksums, RSDP, layout

@Suite("ACPI tables")
struct ACPITableTests {
    @Test func checksumMakesBytesSumToZero() {
        #expect(ACPIChecksum.sum([0x01, 0x02, 0xFF]) == 0x02)
        #expect(ACPIChecksum.checksum(for: [0x01, 0x02, 0x03]) == 0xFA)
        #expect(ACPIChecksum.isValid([0x01, 0x02, 0x03, 0xFA]))
        #expect(!ACPIChecksum.isValid([0x01, 0x02, 0x03, 0xFB]))
        #expect(ACPIChecksum.checksum(for: []) == 0)
    }

    @Test(arguments: [1, 4, 300])
    func everyTableChecksumSumsToZero(vcpus: Int) throws {
        var config = vcpuConfig(vcpus)
        config.mmioDevices = fullConfig().mmioDevices
        let tables = ACPITables.build(config, at: tablesBase)
        #expect(ACPIChecksum.isValid(tables.rsdp[0..<RSDP.firstChecksumLength]))
        #expect(ACPIChecksum.isValid(tables.rsdp))
        for address in [tables.xsdtAddress, tables.fadtAddress, tables.dsdtAddress, tables.madtAddress] {
            let bytes = try table(tables, at: address)
            #expect(ACPIChecksum.sum(bytes) == 0, "checksum of \(signature(of: bytes))")
        }
    }

    @Test func rsdpIsRevision2WithXSDTAddressAndBothChecksums() {
        let tables = ACPITables.build(vcpuConfig(2), at: tablesBase)
        let rsdp = tables.rsdp
        #expect(tables.rsdpAddress == tablesBase)
        #expect(rsdp.count == 36)
        #expect(rsdp.loadASCII(at: 0, width: 8) == "RSD PTR ")
        #expect(rsdp.loadASCII(at: RSDP.Offset.oemID, width: 6) == "KITE  ")
        #expect(rsdp[RSDP.Offset.revision] == 2)
        #expect(rsdp.loadLittleEndian(UInt32.self, at: RSDP.Offset.rsdtAddress) == 0)
        #expect(rsdp.loadLittleEndian(UInt32.self, at: RSDP.Offset.length) == 36)
        #expect(rsdp.loadLittleEndian(UInt64.self, at: RSDP.Offset.xsdtAddress) == tables.xsdtAddress)
        #expect(ACPIChecksum.sum(rsdp[0..<20]) == 0)
        #expect(ACPIChecksum.sum(rsdp) == 0)
        // Corrupting a byte in the extended part breaks only the extended checksum.
        var corrupted = rsdp
        corrupted[RSDP.Offset.xsdtAddress] &+= 1
        #expect(ACPIChecksum.sum(corrupted[0..<20]) == 0)
        #expect(ACPIChecksum.sum(corrupted) != 0)
    }

    @Test(arguments: [1, 64, 300])
    func tableLengthsMatchHeadersAndTablesDoNotOverlap(vcpus: Int) throws {
        var config = vcpuConfig(vcpus)
        config.mmioDevices = fullConfig().mmioDevices
        let tables = ACPITables.build(config, at: tablesBase)
        let layout: [(String, UInt64, Int)] = [
            ("XSDT", tables.xsdtAddress, XSDT.size(entryCount: 2)),
            ("FACP", tables.fadtAddress, FADT.size),
            ("DSDT", tables.dsdtAddress, DSDT(config).encoded().count),
            ("APIC", tables.madtAddress, MADT(config).encoded().count),
        ]
        var end = tablesBase + UInt64(RSDP.size)
        for (expectedSignature, address, expectedLength) in layout {
            #expect(address >= end, "\(expectedSignature) overlaps the previous table")
            #expect(address % 8 == 0)
            let bytes = try table(tables, at: address)
            let header = try #require(ACPITableHeader(decoding: bytes))
            #expect(header.signature == expectedSignature)
            #expect(Int(header.length) == expectedLength)
            #expect(header.oemID == "KITE  ")
            #expect(header.creatorID == "KITE")
            end = address + UInt64(header.length)
        }
        #expect(UInt64(tables.bytes.count) == end - tablesBase)
    }

    @Test func buildIsPositionDependentOnlyThroughPointers() throws {
        let low = ACPITables.build(vcpuConfig(4), at: 0xE0000)
        let high = ACPITables.build(vcpuConfig(4), at: 0x1_0000_0000)
        #expect(low.bytes.count == high.bytes.count)
        #expect(try table(low, at: low.madtAddress) == table(high, at: high.madtAddress))
        #expect(try table(low, at: low.dsdtAddress) == table(high, at: high.dsdtAddress))
        // Above 4 GiB the 32-bit DSDT pointer is left zero; X_DSDT carries the address.
        let fadt = try table(high, at: high.fadtAddress)
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.dsdt) == 0)
        #expect(fadt.loadLittleEndian(UInt64.self, at: FADT.Offset.extendedDSDT) == high.dsdtAddress)
    }

    @Test func xsdtPointsAtFADTAndMADTInsideTheBlob() throws {
        let tables = ACPITables.build(fullConfig(), at: tablesBase)
        let xsdt = try table(tables, at: tables.xsdtAddress)
        #expect(signature(of: xsdt) == "XSDT")
        #expect(xsdt[ACPITableHeader.Offset.revision] == 1)
        let entries = stride(from: ACPITableHeader.size, to: xsdt.count, by: 8).map {
            xsdt.loadLittleEndian(UInt64.self, at: $0)
        }
        #expect(entries == [tables.fadtAddress, tables.madtAddress])
        let signatures = try entries.map { signature(of: try table(tables, at: $0)) }
        #expect(signatures == ["FACP", "APIC"])
    }

    // MARK: - FADT

    @Test func fadtFieldOffsetsFollowTheSpec() {
        #expect(FADT.size == 276)
        #expect(FADT.Offset.dsdt == 40)
        #expect(FADT.Offset.sciInterrupt == 46)
        #expect(FADT.Offset.iapcBootArchitecture == 109)
        #expect(FADT.Offset.flags == 112)
        #expect(FADT.Offset.resetRegister == 116)
        #expect(FADT.Offset.resetValue == 128)
        #expect(FADT.Offset.minorVersion == 131)
        #expect(FADT.Offset.extendedDSDT == 140)
        #expect(FADT.Offset.sleepControlRegister == 244)
        #expect(FADT.Offset.sleepStatusRegister == 256)
        #expect(FADT.Offset.hypervisorVendorIdentity == 268)
        #expect(FADT.Offset.hypervisorVendorIdentity + 8 == FADT.size)
    }

    @Test func fadtFlagsAndSleepAndResetRegisters() throws {
        var config = vcpuConfig(2)
        config.sciInterrupt = 10
        config.sleepControlPort = 0x700
        config.sleepStatusPort = 0x701
        config.resetPort = 0x702
        config.resetValue = 0x0E
        let tables = ACPITables.build(config, at: tablesBase)
        let fadt = try table(tables, at: tables.fadtAddress)
        #expect(signature(of: fadt) == "FACP")
        #expect(fadt.count == 276)
        #expect(fadt[ACPITableHeader.Offset.revision] == 6)
        #expect(fadt[FADT.Offset.minorVersion] == 5)

        // HW_REDUCED_ACPI (20) | RESET_REG_SUP (10) | SLP_BUTTON (5) | PWR_BUTTON (4).
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.flags) == 0x0010_0430)
        // VGA not present (2) | CMOS RTC not present (5); MSI not disabled, no 8042.
        #expect(fadt.loadLittleEndian(UInt16.self, at: FADT.Offset.iapcBootArchitecture) == 0x0024)
        #expect(fadt.loadLittleEndian(UInt16.self, at: FADT.Offset.sciInterrupt) == 10)

        // GAS: space 1 (system I/O), 8 bits wide, offset 0, byte access, then the port.
        let resetGAS: [UInt8] = [1, 8, 0, 1, 0x02, 0x07, 0, 0, 0, 0, 0, 0]
        let sleepControlGAS: [UInt8] = [1, 8, 0, 1, 0x00, 0x07, 0, 0, 0, 0, 0, 0]
        let sleepStatusGAS: [UInt8] = [1, 8, 0, 1, 0x01, 0x07, 0, 0, 0, 0, 0, 0]
        #expect(Array(fadt[116..<128]) == resetGAS)
        #expect(fadt[128] == 0x0E)
        #expect(Array(fadt[244..<256]) == sleepControlGAS)
        #expect(Array(fadt[256..<268]) == sleepStatusGAS)
        #expect(GenericAddress(decoding: fadt, at: FADT.Offset.sleepControlRegister) == .ioPort8(0x700))

        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.dsdt) == UInt32(tables.dsdtAddress))
        #expect(fadt.loadLittleEndian(UInt64.self, at: FADT.Offset.extendedDSDT) == tables.dsdtAddress)
        let dsdtSignature = signature(of: try table(tables, at: tables.dsdtAddress))
        #expect(dsdtSignature == "DSDT")
        #expect(Array(fadt[268..<276]) == Array("KITE".utf8) + [0, 0, 0, 0])
        // No fixed hardware: no FACS, PM1 blocks or PM timer.
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.firmwareControl) == 0)
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.pm1aEventBlock) == 0)
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.pm1aControlBlock) == 0)
        #expect(fadt.loadLittleEndian(UInt32.self, at: FADT.Offset.pmTimerBlock) == 0)
    }

    // MARK: - MADT

    @Test(arguments: [1, 4, 64, 300])
    func madtHasOneProcessorEntryPerVCPU(vcpus: Int) throws {
        let tables = ACPITables.build(vcpuConfig(vcpus), at: tablesBase)
        let madt = try table(tables, at: tables.madtAddress)
        #expect(signature(of: madt) == "APIC")
        #expect(madt[ACPITableHeader.Offset.revision] == MADT.revision)
        #expect(madt.loadLittleEndian(UInt32.self, at: MADT.Offset.localAPICAddress) == 0xFEE0_0000)
        #expect(madt.loadLittleEndian(UInt32.self, at: MADT.Offset.flags) == 1)  // PCAT_COMPAT: every mode has PICs

        let entries = madtEntries(madt)
        let lapics = entries.filter { $0.type == 0 }
        let x2apics = entries.filter { $0.type == 9 }
        #expect(lapics.count == min(vcpus, 255))
        #expect(x2apics.count == max(0, vcpus - 255))

        var apicIDs: [UInt32] = []
        var uids: [UInt32] = []
        for entry in lapics {
            #expect(entry.bytes.count == 8)
            uids.append(UInt32(entry.bytes[2]))
            apicIDs.append(UInt32(entry.bytes[3]))
            #expect(entry.bytes.loadLittleEndian(UInt32.self, at: 4) == 1, "processor enabled")
        }
        for entry in x2apics {
            #expect(entry.bytes.count == 16)
            let id = entry.bytes.loadLittleEndian(UInt32.self, at: 4)
            #expect(id >= 255, "x2APIC entries only for IDs >= 255")
            apicIDs.append(id)
            #expect(entry.bytes.loadLittleEndian(UInt32.self, at: 8) == 1, "processor enabled")
            uids.append(entry.bytes.loadLittleEndian(UInt32.self, at: 12))
        }
        #expect(Set(apicIDs).count == vcpus, "distinct APIC IDs")
        #expect(Set(apicIDs) == Set((0..<vcpus).map { UInt32($0) }))
        #expect(uids.sorted() == (0..<vcpus).map { UInt32($0) }, "UID = vCPU index")

        // The x2APIC NMI entry exists exactly when x2APIC entries do.
        #expect(entries.filter { $0.type == 0x0A }.count == (vcpus > 255 ? 1 : 0))
    }

    @Test func madtPicksEntryTypeByAPICIDNotByCount() throws {
        let config = ACPIConfig(apicIDs: [0, 2, 254, 255, 1000])
        let madt = MADT(config)
        #expect(madt.entries.prefix(5) == [
            .localAPIC(processorUID: 0, apicID: 0, flags: 1),
            .localAPIC(processorUID: 1, apicID: 2, flags: 1),
            .localAPIC(processorUID: 2, apicID: 254, flags: 1),
            .localX2APIC(x2apicID: 255, flags: 1, processorUID: 3),
            .localX2APIC(x2apicID: 1000, flags: 1, processorUID: 4),
        ])
        let x2NMI = madtEntries(madt.encoded()).first { $0.type == 0x0A }
        let entry = try #require(x2NMI)
        // Type 0x0A, length 12, flags 0, UID 0xFFFFFFFF (all), LINT1.
        #expect(entry.bytes == [0x0A, 12, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0])
    }

    @Test func madtRoutesInterruptsThroughOneIOAPIC() throws {
        var config = vcpuConfig(2)
        config.ioapicID = 3
        let entries = madtEntries(MADT(config).encoded())
        let ioapics = entries.filter { $0.type == 1 }
        // Type 1, length 12, ID 3, reserved, address 0xFEC00000, GSI base 0.
        #expect(ioapics.map(\.bytes) == [[1, 12, 3, 0, 0x00, 0x00, 0xC0, 0xFE, 0, 0, 0, 0]])
        let overrides = entries.filter { $0.type == 2 }.map(\.bytes)
        #expect(overrides == [
            // ISA IRQ 0 -> GSI 2, conforming (edge, active high).
            [2, 10, 0, 0, 2, 0, 0, 0, 0x00, 0x00],
            // SCI: ISA IRQ 9 -> GSI 9, level-triggered active-high (0x000D).
            [2, 10, 0, 9, 9, 0, 0, 0, 0x0D, 0x00],
        ])
        // Local APIC NMI: all processors (0xFF), flags 0, LINT1.
        #expect(entries.filter { $0.type == 4 }.map(\.bytes) == [[4, 6, 0xFF, 0, 0, 1]])
        #expect(entries.filter { $0.type == 0x0A }.isEmpty)
    }

    // MARK: - AML encoder

    @Test func pkgLengthEncodingAtBoundaries() {
        // One byte up to 63; then bits 6-7 of the lead byte count the following bytes, its
        // low nibble holds bits 0-3, and each following byte the next 8 bits.
        #expect(AML.encodePkgLength(0) == [0x00])
        #expect(AML.encodePkgLength(63) == [0x3F])
        #expect(AML.encodePkgLength(64) == [0x40, 0x04])
        #expect(AML.encodePkgLength(4095) == [0x4F, 0xFF])
        #expect(AML.encodePkgLength(4096) == [0x80, 0x00, 0x01])
        #expect(AML.encodePkgLength(1_048_575) == [0x8F, 0xFF, 0xFF])
        #expect(AML.encodePkgLength(1_048_576) == [0xC0, 0x00, 0x00, 0x01])
        #expect(AML.encodePkgLength(AML.maximumPkgLength) == [0xCF, 0xFF, 0xFF, 0xFF])
        #expect(AML.encodePkgLength(0x12345) == [0x85, 0x34, 0x12])
    }

    @Test func pkgLengthCountsItsOwnBytes() {
        // payload + 1 <= 63 fits one byte; otherwise the value grows with the PkgLength size.
        #expect(AML.pkgLength(enclosing: 62) == [0x3F])  // 63
        #expect(AML.pkgLength(enclosing: 63) == [0x41, 0x04])  // 65
        #expect(AML.pkgLength(enclosing: 4093) == [0x4F, 0xFF])  // 4095
        #expect(AML.pkgLength(enclosing: 4094) == [0x81, 0x00, 0x01])  // 4097
        #expect(AML.pkgLength(enclosing: 1_048_572) == [0x8F, 0xFF, 0xFF])  // 1048575
        #expect(AML.pkgLength(enclosing: 1_048_573) == [0xC1, 0x00, 0x00, 0x01])  // 1048577
        // A 100-byte buffer: payload = BytePrefix 100 (2) + 100 = 102, PkgLength 104.
        let buffer = AML.buffer([UInt8](repeating: 0xAA, count: 100))
        #expect(Array(buffer.prefix(5)) == [0x11, 0x48, 0x06, 0x0A, 0x64])
        #expect(buffer.count == 1 + 104)
    }

    @Test func nameStringEncoding() {
        #expect(AML.nameString("_HID") == [0x5F, 0x48, 0x49, 0x44])
        #expect(AML.nameString("_SB") == [0x5F, 0x53, 0x42, 0x5F])
        #expect(AML.nameString("\\_SB_") == [0x5C, 0x5F, 0x53, 0x42, 0x5F])
        #expect(AML.nameString("\\_SB_.VR00") == [0x5C, 0x2E, 0x5F, 0x53, 0x42, 0x5F, 0x56, 0x52, 0x30, 0x30])
        #expect(AML.nameString("_SB_.PCI0.S08") ==
            [0x2F, 0x03] + Array("_SB_".utf8) + Array("PCI0".utf8) + Array("S08_".utf8))
        #expect(AML.nameString("^^COM1") == [0x5E, 0x5E] + Array("COM1".utf8))
        #expect(AML.nameString("\\") == [0x5C, 0x00])
        #expect(AML.nameString("") == [0x00])
        #expect(AML.isValidNameSeg("A1_"))
        #expect(AML.isValidNameSeg("_S5_"))
        #expect(!AML.isValidNameSeg("1ABC"))
        #expect(!AML.isValidNameSeg("vr00"))
        #expect(!AML.isValidNameSeg("ABCDE"))
        #expect(!AML.isValidNameSeg(""))
    }

    @Test func integerEncodingUsesTheShortestForm() {
        #expect(AMLData.integer(0).encoded() == [0x00])
        #expect(AMLData.integer(1).encoded() == [0x01])
        #expect(AMLData.ones.encoded() == [0xFF])
        #expect(AMLData.integer(2).encoded() == [0x0A, 0x02])
        #expect(AMLData.integer(0xFF).encoded() == [0x0A, 0xFF])
        #expect(AMLData.integer(0x100).encoded() == [0x0B, 0x00, 0x01])
        #expect(AMLData.integer(0xFFFF).encoded() == [0x0B, 0xFF, 0xFF])
        #expect(AMLData.integer(0x1_0000).encoded() == [0x0C, 0x00, 0x00, 0x01, 0x00])
        #expect(AMLData.integer(0xFFFF_FFFF).encoded() == [0x0C, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(AMLData.integer(0x1_0000_0000).encoded() == [0x0E, 0, 0, 0, 0, 1, 0, 0, 0])
        // Explicit widths keep their prefix whatever the value.
        #expect(AMLData.byte(0).encoded() == [0x0A, 0x00])
        #expect(AMLData.word(1).encoded() == [0x0B, 0x01, 0x00])
        #expect(AMLData.dword(2).encoded() == [0x0C, 0x02, 0x00, 0x00, 0x00])
        #expect(AMLData.qword(3).encoded() == [0x0E, 0x03, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func stringAndEISAIDEncoding() {
        #expect(AMLData.string("LNRO0005").encoded() == [0x0D] + Array("LNRO0005".utf8) + [0x00])
        #expect(AML.eisaID("PNP0501") == 0x0105_D041)
        #expect(AML.eisaID("PNP0A03") == 0x030A_D041)
        #expect(AML.eisaID("PNP0303") == 0x0303_D041)
        #expect(AMLData.eisaID("PNP0501").encoded() == [0x0C, 0x41, 0xD0, 0x05, 0x01])
    }

    @Test func packageBufferNameScopeAndDeviceEncoding() {
        #expect(AMLData.package([.integer(5), .string("A")]).encoded() ==
            [0x12, 0x07, 0x02, 0x0A, 0x05, 0x0D, 0x41, 0x00])
        #expect(AMLData.buffer([1, 2, 3]).encoded() == [0x11, 0x06, 0x0A, 0x03, 0x01, 0x02, 0x03])
        #expect(AMLTerm.name("_UID", .zero).encoded() == [0x08, 0x5F, 0x55, 0x49, 0x44, 0x00])
        #expect(AMLTerm.scope("\\_SB_", []).encoded() == [0x10, 0x06, 0x5C, 0x5F, 0x53, 0x42, 0x5F])
        #expect(AMLTerm.device("VR00", [.name("_UID", .zero)]).encoded() ==
            [0x5B, 0x82, 0x0B, 0x56, 0x52, 0x30, 0x30, 0x08, 0x5F, 0x55, 0x49, 0x44, 0x00])
        // \_S5_: NameOp, \_S5_, PackageOp, PkgLength 7, 4 elements: 5, Zero, Zero, Zero.
        #expect(DSDT.sleepState5(sleepType: 5).encoded() ==
            [0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00])
    }

    @Test func resourceDescriptorEncoding() {
        #expect(AMLResource.io(minimum: 0x3F8, maximum: 0x3F8, alignment: 1, length: 8).encoded() ==
            [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08])
        #expect(AMLResource.irq([4]).encoded() == [0x22, 0x10, 0x00])
        let levelLowShared = AMLResource.InterruptMode(trigger: .level, polarity: .activeLow, sharing: .shared)
        #expect(AMLResource.irq([4, 9], mode: levelLowShared).encoded() == [0x23, 0x10, 0x02, 0x18])
        #expect(AMLResource.extendedInterrupt([5], mode: .levelActiveHigh).encoded() ==
            [0x89, 0x06, 0x00, 0x01, 0x01, 0x05, 0x00, 0x00, 0x00])
        #expect(AMLResource.extendedInterrupt([16, 17], mode: .edgeActiveHigh).encoded() ==
            [0x89, 0x0A, 0x00, 0x03, 0x02, 0x10, 0, 0, 0, 0x11, 0, 0, 0])
        #expect(AMLResource.memory32Fixed(base: 0xD000_0000, length: 0x1000).encoded() ==
            [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00])
        let qword: [UInt8] = [0x8A, 0x2B, 0x00, 0x00, 0x0D, 0x01]
            + [0, 0, 0, 0, 0, 0, 0, 0]  // granularity
            + [0x00, 0x00, 0x00, 0x00, 0x10, 0, 0, 0]  // minimum 0x10_0000_0000
            + [0xFF, 0x0F, 0x00, 0x00, 0x10, 0, 0, 0]  // maximum 0x10_0000_0FFF
            + [0, 0, 0, 0, 0, 0, 0, 0]  // translation
            + [0x00, 0x10, 0, 0, 0, 0, 0, 0]  // length 0x1000
        #expect(AMLResource.qwordMemory(base: 0x10_0000_0000, length: 0x1000).encoded() == qword)
        #expect(qword.count == 3 + 43)
        #expect(AMLResource.memory(base: 0xFFFF_F000, length: 0x1000) == .memory32Fixed(base: 0xFFFF_F000, length: 0x1000))
        #expect(AMLResource.memory(base: 0xFFFF_F000, length: 0x2000) == .qwordMemory(base: 0xFFFF_F000, length: 0x2000))

        // COM1's template: IO + IRQNoFlags, then End Tag 0x79 with a checksum making the sum 0.
        let template = AMLResource.template([.io(minimum: 0x3F8, maximum: 0x3F8, alignment: 1, length: 8), .irq([4])])
        #expect(template == [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x0E])
        #expect(ACPIChecksum.isValid(template))
        #expect(Array(AMLData.resourceTemplate([.irq([4])]).encoded().prefix(4)) == [0x11, 0x08, 0x0A, 0x05])
    }

    // MARK: - DSDT

    @Test func dsdtHasS5PackageCOM1AndMMIODevices() throws {
        var config = fullConfig()
        config.s5SleepType = 7
        let tables = ACPITables.build(config, at: tablesBase)
        let dsdt = try table(tables, at: tables.dsdtAddress)
        #expect(signature(of: dsdt) == "DSDT")
        #expect(dsdt[ACPITableHeader.Offset.revision] == 2)
        #expect(contains(dsdt, [0x08, 0x5C, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x07, 0x00, 0x00, 0x00]))
        #expect(contains(dsdt, [0x10]))
        #expect(contains(dsdt, [0x5C, 0x5F, 0x53, 0x42, 0x5F]))  // \_SB_
        #expect(contains(dsdt, [0x5B, 0x82]))  // DeviceOp
        #expect(contains(dsdt, Array("COM1".utf8)))
        #expect(contains(dsdt, [0x0C, 0x41, 0xD0, 0x05, 0x01]))  // EISAID("PNP0501")
        #expect(contains(dsdt, Array("VR00".utf8)))
        #expect(contains(dsdt, Array("VR01".utf8)))
        #expect(contains(dsdt, AMLData.string("LNRO0005").encoded()))
        #expect(contains(dsdt, AMLResource.memory32Fixed(base: 0xD000_0000, length: 0x1000).encoded()))
        #expect(contains(dsdt, AMLResource.qwordMemory(base: 0x10_0000_0000, length: 0x1000).encoded()))
        #expect(contains(dsdt, AMLResource.extendedInterrupt([16], mode: .edgeActiveHigh).encoded()))

        // The DSDT is the header followed by exactly the AML terms.
        #expect(Array(dsdt[ACPITableHeader.size...]) == DSDT(config).aml)
        #expect(DSDT(config).terms.count == 2)

        var withoutCOM1 = vcpuConfig(1)
        withoutCOM1.includesCOM1 = false
        let bare = DSDT(withoutCOM1)
        #expect(bare.terms == [DSDT.sleepState5(sleepType: 5)])
        #expect(!contains(bare.encoded(), Array("COM1".utf8)))
    }

    // MARK: - External validation with ACPICA

    @Test func iaslDisassemblesEveryTableWithoutErrors() throws {
        guard let iasl = findExecutable("iasl") else {
            Issue.record("iasl not found: \(installHint)")
            return
        }
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let tables = ACPITables.build(fullConfig(), at: tablesBase)
        let files = try writeTables(tables, to: directory)

        var disassembly: [String: String] = [:]
        for (name, file) in files.sorted(by: { $0.key < $1.key }) {
            let result = try run(iasl, ["-d", file], in: directory)
            #expect(result.status == 0, "iasl -d \(file) failed:\n\(result.output)")
            let lowered = result.output.lowercased()
            for problem in ["error", "warning", "invalid", "incorrect", "could not"] {
                #expect(!lowered.contains(problem), "iasl -d \(file) reported \(problem):\n\(result.output)")
            }
            let dsl = directory.appendingPathComponent("\(name).dsl")
            disassembly[name] = try String(contentsOf: dsl, encoding: .utf8)
        }

        let dsdt = try #require(disassembly["dsdt"])
        #expect(dsdt.contains("DefinitionBlock (\"\", \"DSDT\", 2, \"KITE  \", \"KITEDSDT\""))
        #expect(dsdt.contains("Name (\\_S5, Package (0x04)"))
        #expect(dsdt.contains("Scope (\\_SB)"))
        #expect(dsdt.contains("Device (COM1)"))
        #expect(dsdt.contains("EisaId (\"PNP0501\")"))
        #expect(dsdt.contains("Device (PS2K)") && dsdt.contains("EisaId (\"PNP0303\")"), "the keyboard controller")
        #expect(dsdt.contains("IO (Decode16,"))
        #expect(dsdt.contains("IRQNoFlags ()"))
        #expect(dsdt.contains("Device (VR00)"))
        #expect(dsdt.contains("Device (VR01)"))
        #expect(occurrences(of: "Name (_HID, \"LNRO0005\")", in: dsdt) == 2)
        #expect(dsdt.contains("Memory32Fixed (ReadWrite,"))
        #expect(dsdt.contains("QWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,"))
        #expect(occurrences(of: "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive", in: dsdt) == 2)

        let facp = try #require(disassembly["facp"])
        #expect(facp.contains("Hardware Reduced (V5) : 1"))
        #expect(facp.contains("Reset Register Supported (V2) : 1"))
        #expect(facp.contains("FADT Minor Revision : 05"))
        #expect(occurrences(of: "Space ID : 01 [SystemIO]", in: facp) == 3)

        let apic = try #require(disassembly["apic"])
        #expect(occurrences(of: "[Processor Local APIC]", in: apic) == 255)
        #expect(occurrences(of: "[Processor Local x2APIC]", in: apic) == 45)
        #expect(occurrences(of: "[I/O APIC]", in: apic) == 1)
        #expect(occurrences(of: "[Interrupt Source Override]", in: apic) == 2)
        #expect(occurrences(of: "[Local APIC NMI]", in: apic) == 1)
        #expect(occurrences(of: "[Local x2APIC NMI]", in: apic) == 1)
        #expect(!apic.contains("Unknown"))

        let xsdt = try #require(disassembly["xsdt"])
        #expect(occurrences(of: "ACPI Table Address", in: xsdt) == 2)
    }

    /// ACPICA's own interpreter loads the tables, evaluates \_S5_ and the _CRS objects, and
    /// enters S5 through the hardware-reduced sleep registers, as Linux does at power-off.
    @Test func acpiexecLoadsTablesAndEntersS5ThroughSleepRegisters() throws {
        guard let acpiexec = findExecutable("acpiexec") else {
            Issue.record("acpiexec not found: \(installHint)")
            return
        }
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = try writeTables(ACPITables.build(fullConfig(), at: tablesBase), to: directory)
        let commands = "evaluate \\_S5_; evaluate \\_SB.VR00._CRS; evaluate \\_SB.COM1._HID; sleep 5"
        let result = try run(acpiexec, ["-b", commands] + ["facp", "dsdt", "apic"].compactMap { files[$0] },
                             in: directory)
        #expect(result.status == 0, "acpiexec failed:\n\(result.output)")
        let output = result.output
        #expect(!output.contains("ACPI Error"), "\(output)")
        #expect(!output.contains("Warning"), "\(output)")
        #expect(output.contains("[Package] Contains 4 Elements:"))
        #expect(output.contains("[Integer] = 0000000000000005"))
        #expect(output.contains("[Integer] = 000000000105D041"))
        #expect(output.contains("86 09 00 01 00 00 00 D0 00 10 00 00 89 06"))
        #expect(output.contains("Sleep-A: 05"))
        #expect(output.contains("HwExtendedSleep"), "S5 must go through the extended (HW-reduced) sleep path:\n\(output)")
    }
}
