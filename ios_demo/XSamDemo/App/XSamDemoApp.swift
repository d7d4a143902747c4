import SwiftUI

/// One screen: pick or take a photo, type a query or draw prompts, see the masks.
@main
struct XSamDemoApp: App {
    @StateObject private var model = SegmentModel()

    var body: some Scene {
        WindowGroup {
            ContentView(model: model)
        }
    }
}
