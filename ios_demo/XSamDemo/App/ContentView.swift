import PhotosUI
import SwiftUI

/// The main screen: photo and camera buttons, the input mode, the query, the status line, the image canvas;
/// Self-check opens SelfCheckView as a sheet.
struct ContentView: View {
    @ObservedObject var model: SegmentModel
    @State private var pickerItem: PhotosPickerItem?
    @State private var showCamera = false
    @State private var showSelfCheck = false

    var body: some View {
        VStack(spacing: 8) {
            HStack {
                PhotosPicker("Photo", selection: $pickerItem, matching: .images)
                Button("Camera") { showCamera = true }
                    .disabled(!UIImagePickerController.isSourceTypeAvailable(.camera))
                Picker("Mode", selection: $model.mode) {
                    ForEach(InputMode.allCases) { mode in
                        Text(mode.rawValue).tag(mode)
                    }
                }
                .pickerStyle(.segmented)
            }
            HStack {
                TextField("the red circle", text: $model.query)
                    .textFieldStyle(.roundedBorder)
                    .disabled(model.mode != .text)
                Button("Clear") { model.clearPrompts() }
                Button("Segment") { model.segment() }
                    .buttonStyle(.borderedProminent)
                Button("Self-check") { showSelfCheck = true }
            }
            Text(model.status)
                .font(.footnote)
                .frame(maxWidth: .infinity, alignment: .leading)
            ImageCanvas(model: model)
        }
        .padding()
        .onChange(of: pickerItem) { item in
            guard let item = item else { return }
            Task {
                if let data = try? await item.loadTransferable(type: Data.self), let image = UIImage(data: data) {
                    model.load(image)
                }
            }
        }
        .sheet(isPresented: $showCamera) {
            CameraPicker { image in model.load(image) }
        }
        .sheet(isPresented: $showSelfCheck) {
            SelfCheckView(model: model)
        }
    }
}
