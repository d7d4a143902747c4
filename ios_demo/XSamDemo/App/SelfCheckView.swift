import SwiftUI

/// The self-check sheet: runs the bundle's golden vectors on this device (XSamBridge.selfCheck) and shows the
/// verdict with the worst logit difference and mask IoU against the tolerances.
struct SelfCheckView: View {
    @ObservedObject var model: SegmentModel
    @Environment(\.dismiss) private var dismiss

    var body: some View {
        NavigationStack {
            Form {
                Section("Tolerances") {
                    LabeledContent("Logit atol", value: Self.format(SegmentModel.selfCheckAtol))
                    LabeledContent("Min mask IoU", value: String(format: "%.2f", SegmentModel.selfCheckMinIou))
                }
                Section("Result") {
                    if model.selfCheckRunning {
                        HStack {
                            ProgressView()
                            Text("running the golden vectors…")
                        }
                    } else if let report = model.selfCheck {
                        Label(report.passed ? "Passed" : "Failed",
                              systemImage: report.passed ? "checkmark.seal.fill" : "xmark.octagon.fill")
                            .foregroundColor(report.passed ? .green : .red)
                        LabeledContent("Golden requests", value: "\(report.requests)")
                        LabeledContent("Worst logit difference", value: Self.format(report.worstLogitDiff))
                        LabeledContent("Worst mask IoU", value: String(format: "%.4f", report.worstMaskIou))
                    } else if let error = model.selfCheckError {
                        Text(error).foregroundColor(.red)
                    } else {
                        Text("Not run yet.")
                    }
                }
                Section {
                    Button("Run self-check") { model.runSelfCheck() }
                        .disabled(model.selfCheckRunning)
                }
            }
            .navigationTitle("Self-check")
            .toolbar {
                ToolbarItem(placement: .confirmationAction) {
                    Button("Done") { dismiss() }
                }
            }
        }
        .onAppear {
            if model.selfCheck == nil && !model.selfCheckRunning {
                model.runSelfCheck()
            }
        }
    }

    static func format(_ value: Double) -> String {
        String(format: "%.3g", value)
    }
}
