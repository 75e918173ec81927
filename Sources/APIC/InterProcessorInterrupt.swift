/// An interrupt command (ICR) as a local APIC sends it (SDM 11.6.1), and which APICs it
/// reaches. Routing is pure: it reads the targets' IDs, logical destinations and priorities
/// from the `LocalAPIC` values given; delivering (under each target vCPU's lock, then waking
/// or kicking it) is the interrupt controller's.
public struct InterProcessorInterrupt: Sendable, Equatable {
    public enum DeliveryMode: UInt32, Sendable {
        case fixed = 0, lowestPriority = 1, smi = 2, reserved = 3, nmi = 4, initialize = 5, startUp = 6, extINT = 7
    }

    public enum Shorthand: UInt32, Sendable {
        case none = 0, selfOnly = 1, allIncludingSelf = 2, allExcludingSelf = 3
    }

    public var vector: UInt8
    public var deliveryMode: DeliveryMode
    public var logicalDestination: Bool
    /// Level: assert (1) or de-assert (0); only INIT uses de-assert, which does nothing.
    public var assert: Bool
    public var levelTriggered: Bool
    public var shorthand: Shorthand
    public var destination: UInt8

    public init(commandLow low: UInt32, commandHigh high: UInt32) {
        vector = UInt8(truncatingIfNeeded: low)
        deliveryMode = DeliveryMode(rawValue: (low >> 8) & 7) ?? .fixed
        logicalDestination = low & (1 << 11) != 0
        assert = low & (1 << 14) != 0
        levelTriggered = low & (1 << 15) != 0
        shorthand = Shorthand(rawValue: (low >> 18) & 3) ?? .none
        destination = UInt8(truncatingIfNeeded: high >> 24)
    }

    /// What arrives at each target.
    public enum Message: Sendable, Equatable {
        case interrupt(vector: UInt8, levelTriggered: Bool)
        case nmi
        case initialize
        case startUp(vector: UInt8)
    }

    /// What the IPI delivers, or nil when it delivers nothing (an INIT de-assert, SMI,
    /// reserved and ExtINT modes, which an IPI cannot use meaningfully).
    public var message: Message? {
        switch deliveryMode {
        case .fixed, .lowestPriority: .interrupt(vector: vector, levelTriggered: levelTriggered)
        case .nmi: .nmi
        case .initialize: (levelTriggered && !assert) ? nil : .initialize
        case .startUp: .startUp(vector: vector)
        case .smi, .reserved, .extINT: nil
        }
    }

    /// The indices (into `apics`) of the APICs this IPI from `apics[source]` reaches. A
    /// lowest-priority IPI reaches one of the matching APICs: the one with the lowest
    /// processor priority, the lowest index among equals.
    public func targets(from source: Int, in apics: [LocalAPIC]) -> [Int] {
        // A hardware-disabled APIC (IA32_APIC_BASE.EN clear) is off the APIC bus: no IPI
        // reaches it, INIT included (KVM's delivery skips such APICs the same way).
        switch shorthand {
        case .selfOnly: [source]
        case .allIncludingSelf: apics.indices.filter { apics[$0].isHardwareEnabled }
        case .allExcludingSelf: apics.indices.filter { $0 != source && apics[$0].isHardwareEnabled }
        case .none:
            LocalAPIC.matching(destination: destination, logical: logicalDestination,
                               lowestPriority: deliveryMode == .lowestPriority, in: apics)
        }
    }
}

extension LocalAPIC {
    /// The indices of the APICs a message for `destination` reaches; with `lowestPriority`,
    /// only the matching one with the lowest processor priority (the lowest index among
    /// equals).
    public static func matching(destination: UInt8, logical: Bool, lowestPriority: Bool,
                                in apics: [LocalAPIC]) -> [Int] {
        let matching = apics.indices.filter { apics[$0].matches(destination: destination, logical: logical) }
        guard lowestPriority, let lowest = matching.min(by: { apics[$0].processorPriority < apics[$1].processorPriority })
        else { return matching }
        return [lowest]
    }
}
