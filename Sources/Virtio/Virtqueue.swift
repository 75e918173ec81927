import GuestMemory

// Placeholder so the package builds; the split virtqueue is being written (issue 3).
public struct Virtqueue: Sendable {
    public init() {}
}
