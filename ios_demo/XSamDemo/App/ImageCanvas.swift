import SwiftUI

/// The photo fitted and centred, the masks over it, labels where the Python overlay puts them, the prompts;
/// a drag (or a tap: a drag of zero length) draws a prompt in the current mode.
struct ImageCanvas: View {
    @ObservedObject var model: SegmentModel
    @State private var path: [CGPoint] = []

    var body: some View {
        GeometryReader { geo in
            if let photo = model.photo {
                let imageSize = CGSize(width: photo.width, height: photo.height)
                let rect = XSamGeometry.imageRect(inViewSize: geo.size, imageSize: imageSize)
                ZStack(alignment: .topLeading) {
                    Image(decorative: photo, scale: 1)
                        .resizable()
                        .frame(width: rect.width, height: rect.height)
                        .offset(x: rect.minX, y: rect.minY)
                    if let overlay = model.overlay {
                        Image(decorative: overlay, scale: 1)
                            .resizable()
                            .frame(width: rect.width, height: rect.height)
                            .offset(x: rect.minX, y: rect.minY)
                    }
                    Canvas { context, size in
                        drawLabels(in: &context, rect: rect, imageSize: imageSize)
                        drawPrompts(in: &context, viewSize: size, imageSize: imageSize)
                    }
                }
                .contentShape(Rectangle())
                .gesture(
                    DragGesture(minimumDistance: 0)
                        .onChanged { value in path.append(value.location) }
                        .onEnded { value in
                            path.append(value.location)
                            model.addPrompt(path: path, viewSize: geo.size)
                            path = []
                        }
                )
            } else {
                Text("Pick or take a photo")
                    .frame(maxWidth: .infinity, maxHeight: .infinity)
            }
        }
    }

    private func drawLabels(in context: inout GraphicsContext, rect: CGRect, imageSize: CGSize) {
        guard let answer = model.answer else { return }
        let scale = rect.width / imageSize.width
        let fontSize = max(10, (min(imageSize.width, imageSize.height) / 28).rounded()) * scale
        for segment in answer.segments where !segment.boundingBox.isNull {
            let text = context.resolve(
                Text(segment.caption).font(.system(size: fontSize)).foregroundColor(color(segment.inkRGB))
            )
            let textSize = text.measure(in: CGSize(width: CGFloat.greatestFiniteMagnitude, height: fontSize * 2))
            let labelSize = CGSize(width: (textSize.width + 4 * scale) / scale, height: (textSize.height + 4 * scale) / scale)
            let corner = XSamGeometry.labelCorner(forBox: segment.boundingBox, labelSize: labelSize, imageSize: imageSize)
            let box = CGRect(
                x: rect.minX + corner.x * scale, y: rect.minY + corner.y * scale,
                width: labelSize.width * scale, height: labelSize.height * scale
            )
            context.fill(Path(box), with: .color(color(segment.colorRGB)))
            context.draw(text, at: CGPoint(x: box.minX + 2 * scale, y: box.minY + 2 * scale), anchor: .topLeading)
        }
    }

    private func drawPrompts(in context: inout GraphicsContext, viewSize: CGSize, imageSize: CGSize) {
        let stroke = StrokeStyle(lineWidth: 3)
        let yellow = Color(red: 1, green: 0.92, blue: 0.23)
        for prompt in model.prompts {
            let points = stride(from: 0, to: prompt.coordinates.count - 1, by: 2).map { i in
                XSamGeometry.viewPoint(
                    forImagePoint: CGPoint(x: prompt.coordinates[i].doubleValue, y: prompt.coordinates[i + 1].doubleValue),
                    viewSize: viewSize, imageSize: imageSize
                )
            }
            switch prompt.kind {
            case .point:
                if let p = points.first {
                    context.stroke(Path(ellipseIn: CGRect(x: p.x - 8, y: p.y - 8, width: 16, height: 16)), with: .color(yellow), style: stroke)
                }
            case .box:
                if points.count == 2 {
                    context.stroke(Path(CGRect(origin: points[0], size: CGSize(width: points[1].x - points[0].x, height: points[1].y - points[0].y))), with: .color(yellow), style: stroke)
                }
            default:
                context.stroke(polyline(points), with: .color(yellow), style: stroke)
            }
        }
        if path.count > 1 {
            context.stroke(polyline(path), with: .color(yellow), style: stroke)
        }
    }

    private func polyline(_ points: [CGPoint]) -> Path {
        var line = Path()
        line.addLines(points)
        return line
    }

    private func color(_ rgb: UInt32) -> Color {
        Color(
            red: Double((rgb >> 16) & 0xFF) / 255, green: Double((rgb >> 8) & 0xFF) / 255, blue: Double(rgb & 0xFF) / 255
        )
    }
}
