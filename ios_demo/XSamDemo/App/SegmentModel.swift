import SwiftUI
import UIKit

/// What the text box or a gesture means: a referring question, or point / box / scribble prompts.
enum InputMode: String, CaseIterable, Identifiable {
    case text, point, box, scribble

    var id: String { rawValue }

    var gesture: XSamGestureMode? {
        switch self {
        case .text: return nil
        case .point: return .point
        case .box: return .box
        case .scribble: return .scribble
        }
    }
}

/// The screen's state, and the one serial queue every core call runs on (a session is not thread-safe).
@MainActor
final class SegmentModel: ObservableObject {
    /// Largest photo side handed to the core: masks come back at the image size.
    static let maxSide: CGFloat = 1024
    /// The runner's selfcheck tolerances (native/tools/runner.cpp).
    static let selfCheckAtol = 1e-3
    static let selfCheckMinIou = 0.99

    @Published var photo: CGImage?
    @Published var overlay: CGImage?
    @Published var answer: XSamAnswer?
    @Published var prompts: [XSamPrompt] = []
    @Published var mode: InputMode = .text
    @Published var query = ""
    @Published var status = "opening the bundle…"
    @Published var selfCheck: XSamSelfCheckReport?
    @Published var selfCheckError: String?
    @Published var selfCheckRunning = false

    private var bridge: XSamBridge?
    private let queue = DispatchQueue(label: "org.xsam.edge.session")

    init() {
        let url = Self.bundleURL()
        queue.async {
            do {
                let opened = try XSamBridge(bundlePath: url.path)
                Task { @MainActor in
                    self.bridge = opened
                    self.status = "bundle ready: pick a photo"
                }
            } catch {
                Task { @MainActor in
                    self.status = "no bundle at \(url.path): \(error.localizedDescription)"
                }
            }
        }
    }

    /// A folder named "bundle" in the app's resources, else Documents/bundle (copied in with Finder).
    static func bundleURL() -> URL {
        if let shipped = Bundle.main.url(forResource: "bundle", withExtension: nil) {
            return shipped
        }
        let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
        return documents.appendingPathComponent("bundle")
    }

    func load(_ image: UIImage) {
        guard let bridge = bridge, let cgImage = Self.upright(image) else {
            status = "the bundle is not open yet"
            return
        }
        status = "encoding the photo…"
        queue.async {
            do {
                try bridge.setImage(cgImage)
                Task { @MainActor in
                    self.photo = cgImage
                    self.clearPrompts()
                    self.status = "\(cgImage.width) x \(cgImage.height): type a query or draw, then Segment"
                }
            } catch {
                Task { @MainActor in self.status = "error: \(error.localizedDescription)" }
            }
        }
    }

    func addPrompt(path: [CGPoint], viewSize: CGSize) {
        guard let photo = photo, let gesture = mode.gesture else { return }
        let imageSize = CGSize(width: photo.width, height: photo.height)
        let values = path.map { NSValue(cgPoint: $0) }
        if let prompt = XSamGeometry.prompt(for: gesture, path: values, viewSize: viewSize, imageSize: imageSize) {
            prompts.append(prompt)
            status = "\(prompts.count) prompt(s): tap Segment"
        }
    }

    func clearPrompts() {
        prompts = []
        answer = nil
        overlay = nil
    }

    func segment() {
        guard let bridge = bridge, photo != nil else { return }
        let asked: (task: String, text: String?, prompts: [XSamPrompt])
        if mode == .text {
            let trimmed = query.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else {
                status = "type a query"
                return
            }
            asked = ("referring", trimmed, [])
        } else {
            guard !prompts.isEmpty else {
                status = "draw a prompt first"
                return
            }
            asked = ("interactive", nil, prompts)
        }
        status = "segmenting…"
        let start = Date()
        queue.async {
            do {
                let result = try bridge.segmentTask(asked.task, text: asked.text, prompts: asked.prompts)
                let layer = result.newOverlayImage()
                let ms = Int(Date().timeIntervalSince(start) * 1000)
                Task { @MainActor in
                    self.answer = result
                    self.overlay = layer
                    let generated = result.text.map { ": \($0)" } ?? ""
                    self.status = "\(result.segments.count) mask(s) in \(ms) ms\(generated)"
                }
            } catch {
                Task { @MainActor in self.status = "error: \(error.localizedDescription)" }
            }
        }
    }

    /// Runs the bundle's golden vectors on the session's queue; the result lands in selfCheck / selfCheckError.
    func runSelfCheck() {
        guard let bridge = bridge else {
            selfCheckError = "the bundle is not open yet"
            return
        }
        selfCheckRunning = true
        selfCheck = nil
        selfCheckError = nil
        queue.async {
            do {
                let report = try bridge.selfCheck(atol: Self.selfCheckAtol, minIou: Self.selfCheckMinIou)
                Task { @MainActor in
                    self.selfCheck = report
                    self.selfCheckRunning = false
                    let verdict = report.passed ? "passed" : "FAILED"
                    self.status = "self-check \(verdict): \(report.requests) golden requests"
                }
            } catch {
                Task { @MainActor in
                    self.selfCheckError = error.localizedDescription
                    self.selfCheckRunning = false
                }
            }
        }
    }

    /// The photo drawn upright (EXIF orientation applied) and shrunk to maxSide.
    static func upright(_ image: UIImage) -> CGImage? {
        let longer = max(image.size.width, image.size.height)
        let scale = longer > maxSide ? maxSide / longer : 1
        let size = CGSize(width: (image.size.width * scale).rounded(), height: (image.size.height * scale).rounded())
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        let rendered = UIGraphicsImageRenderer(size: size, format: format).image { _ in
            image.draw(in: CGRect(origin: .zero, size: size))
        }
        return rendered.cgImage
    }
}
