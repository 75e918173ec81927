/// Generic Address Structure (GAS), 12 bytes (ACPI 6.5, section 5.2.3.2).
public struct GenericAddress: Sendable, Equatable {
    public static let size = 12

    /// Address space ID.
    public enum AddressSpace: UInt8, Sendable {
        case systemMemory = 0
        case systemIO = 1
        case pciConfiguration = 2
    }

    /// Access size field: how wide each access must be.
    public enum AccessSize: UInt8, Sendable {
        case undefined = 0
        case byte = 1
        case word = 2
        case dword = 3
        case qword = 4
    }

    public var addressSpace: AddressSpace
    public var bitWidth: UInt8
    public var bitOffset: UInt8
    public var accessSize: AccessSize
    public var address: UInt64

    public init(addressSpace: AddressSpace, bitWidth: UInt8, bitOffset: UInt8 = 0,
                accessSize: AccessSize, address: UInt64) {
        self.addressSpace = addressSpace
        self.bitWidth = bitWidth
        self.bitOffset = bitOffset
        self.accessSize = accessSize
        self.address = address
    }

    /// An 8-bit register in system I/O space at `port`, accessed with byte accesses.
    public static func ioPort8(_ port: UInt16) -> GenericAddress {
        GenericAddress(addressSpace: .systemIO, bitWidth: 8, accessSize: .byte, address: UInt64(port))
    }

    /// The all-zero GAS, meaning "not present".
    public static let notPresent = GenericAddress(
        addressSpace: .systemMemory, bitWidth: 0, accessSize: .undefined, address: 0)

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [addressSpace.rawValue, bitWidth, bitOffset, accessSize.rawValue]
        bytes.appendLittleEndian(address)
        return bytes
    }

    /// Decodes the 12 bytes at `offset`; nil if the address space or access size is unknown.
    public init?(decoding bytes: [UInt8], at offset: Int) {
        guard offset >= 0, offset + Self.size <= bytes.count,
              let space = AddressSpace(rawValue: bytes[offset]),
              let access = AccessSize(rawValue: bytes[offset + 3]) else { return nil }
        self.init(addressSpace: space, bitWidth: bytes[offset + 1], bitOffset: bytes[offset + 2],
                  accessSize: access, address: bytes.loadLittleEndian(UInt64.self, at: offset + 4))
    }
}
