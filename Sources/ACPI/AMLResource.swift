/// A resource descriptor inside an AML ResourceTemplate (ACPI 6.5, section 6.4).
public enum AMLResource: Sendable, Equatable {
    /// How an interrupt is signalled.
    public struct InterruptMode: Sendable, Equatable {
        public enum Trigger: Sendable, Equatable { case edge, level }
        public enum Polarity: Sendable, Equatable { case activeHigh, activeLow }
        public enum Sharing: Sendable, Equatable { case exclusive, shared }

        public var trigger: Trigger
        public var polarity: Polarity
        public var sharing: Sharing
        public var wakeCapable: Bool

        public init(trigger: Trigger, polarity: Polarity, sharing: Sharing = .exclusive, wakeCapable: Bool = false) {
            self.trigger = trigger
            self.polarity = polarity
            self.sharing = sharing
            self.wakeCapable = wakeCapable
        }

        /// ISA style: edge-triggered, active high, exclusive.
        public static let edgeActiveHigh = InterruptMode(trigger: .edge, polarity: .activeHigh)
        /// Level-triggered, active high, exclusive (Kite's virtio-mmio interrupts).
        public static let levelActiveHigh = InterruptMode(trigger: .level, polarity: .activeHigh)
    }

    /// Memory caching attribute of an address-space descriptor (_MEM).
    public enum MemoryCaching: UInt8, Sendable, Equatable {
        case nonCacheable = 0
        case cacheable = 1
        case writeCombining = 2
        case prefetchable = 3
    }

    /// IO(): small descriptor type 0x08, 8 bytes.
    case io(minimum: UInt16, maximum: UInt16, alignment: UInt8, length: UInt8, decodes16Bit: Bool = true)
    /// IRQ()/IRQNoFlags(): small descriptor type 0x04, for ISA IRQs 0-15. Encoded in its
    /// 2-byte-payload form (IRQNoFlags) when the mode is edge/active-high/exclusive/not-wake.
    case irq([UInt8], mode: InterruptMode = .edgeActiveHigh)
    /// Interrupt(): Extended Interrupt Descriptor, large type 0x09, for GSIs.
    case extendedInterrupt([UInt32], mode: InterruptMode, consumer: Bool = true)
    /// Memory32Fixed(): large type 0x06, 12 bytes.
    case memory32Fixed(base: UInt32, length: UInt32, writable: Bool = true)
    /// QWordMemory(): QWord Address Space Descriptor, large type 0x0A, memory resource,
    /// fixed minimum and maximum, consumer, positive decode.
    case qwordMemory(base: UInt64, length: UInt64, writable: Bool = true, caching: MemoryCaching = .nonCacheable)

    /// Small-descriptor and large-descriptor tags.
    public enum Tag {
        public static let irqNoFlags: UInt8 = 0x22  // type 0x04, length 2
        public static let irq: UInt8 = 0x23  // type 0x04, length 3
        public static let io: UInt8 = 0x47  // type 0x08, length 7
        public static let endTag: UInt8 = 0x79  // type 0x0F, length 1
        public static let memory32Fixed: UInt8 = 0x86
        public static let extendedInterrupt: UInt8 = 0x89
        public static let qwordAddressSpace: UInt8 = 0x8A
    }

    /// `memory32Fixed` when the whole range lies below 4 GiB, else `qwordMemory`.
    public static func memory(base: UInt64, length: UInt64) -> AMLResource {
        precondition(length > 0, "empty memory range")
        if base + length - 1 <= UInt64(UInt32.max) {
            return .memory32Fixed(base: UInt32(base), length: UInt32(length))
        }
        return .qwordMemory(base: base, length: length)
    }

    /// The descriptor bytes.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        switch self {
        case let .io(minimum, maximum, alignment, length, decodes16Bit):
            bytes = [Tag.io, decodes16Bit ? 1 : 0]
            bytes.appendLittleEndian(minimum)
            bytes.appendLittleEndian(maximum)
            bytes += [alignment, length]

        case let .irq(irqs, mode):
            var mask: UInt16 = 0
            for irq in irqs {
                precondition(irq < 16, "IRQ descriptors cover ISA IRQs 0-15 only")
                mask |= 1 << irq
            }
            if mode == .edgeActiveHigh {
                bytes = [Tag.irqNoFlags]
                bytes.appendLittleEndian(mask)
            } else {
                bytes = [Tag.irq]
                bytes.appendLittleEndian(mask)
                var flags: UInt8 = mode.trigger == .edge ? 1 << 0 : 0
                if mode.polarity == .activeLow { flags |= 1 << 3 }
                if mode.sharing == .shared { flags |= 1 << 4 }
                if mode.wakeCapable { flags |= 1 << 5 }
                bytes.append(flags)
            }

        case let .extendedInterrupt(gsis, mode, consumer):
            precondition((1...255).contains(gsis.count), "1-255 interrupts per descriptor")
            bytes = [Tag.extendedInterrupt]
            bytes.appendLittleEndian(UInt16(2 + 4 * gsis.count))
            var flags: UInt8 = consumer ? 1 << 0 : 0
            if mode.trigger == .edge { flags |= 1 << 1 }
            if mode.polarity == .activeLow { flags |= 1 << 2 }
            if mode.sharing == .shared { flags |= 1 << 3 }
            if mode.wakeCapable { flags |= 1 << 4 }
            bytes += [flags, UInt8(gsis.count)]
            for gsi in gsis { bytes.appendLittleEndian(gsi) }

        case let .memory32Fixed(base, length, writable):
            bytes = [Tag.memory32Fixed]
            bytes.appendLittleEndian(UInt16(9))
            bytes.append(writable ? 1 : 0)
            bytes.appendLittleEndian(base)
            bytes.appendLittleEndian(length)

        case let .qwordMemory(base, length, writable, caching):
            precondition(length > 0 && base <= UInt64.max - (length - 1), "bad memory range")
            bytes = [Tag.qwordAddressSpace]
            bytes.appendLittleEndian(UInt16(43))
            bytes.append(0)  // resource type: memory range
            // General flags: bit 0 consumer, bit 1 positive decode (0), bit 2 _MIF, bit 3 _MAF.
            bytes.append(0b1101)
            // Type-specific flags: bit 0 read-write, bits 1-2 _MEM, bits 3-4 _MTP = memory.
            bytes.append((writable ? 1 : 0) | caching.rawValue << 1)
            bytes.appendLittleEndian(UInt64(0))  // granularity
            bytes.appendLittleEndian(base)  // minimum
            bytes.appendLittleEndian(base + (length - 1))  // maximum
            bytes.appendLittleEndian(UInt64(0))  // translation offset
            bytes.appendLittleEndian(length)
        }
        return bytes
    }

    /// The ResourceTemplate body: the descriptors followed by an End Tag whose checksum byte
    /// makes all the bytes add up to zero.
    public static func template(_ descriptors: [AMLResource]) -> [UInt8] {
        var bytes = descriptors.flatMap { $0.encoded() }
        bytes.append(Tag.endTag)
        bytes.append(ACPIChecksum.checksum(for: bytes))
        return bytes
    }
}
