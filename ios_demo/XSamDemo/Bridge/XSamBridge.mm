// Type conversion only (NSString / NSArray / CGImage <-> the C++ values of native/apple); not compiled on Linux.
#import "XSamBridge.h"

#include <memory>
#include <vector>

#include "bridge_session.hpp"
#include "gestures.hpp"
#include "overlay_math.hpp"

NSErrorDomain const XSamErrorDomain = @"XSamErrorDomain";

static NSError *MakeError(const xsam_apple::BridgeError &e) {
  NSString *message = [NSString stringWithUTF8String:e.message.c_str()] ?: @"(message not UTF-8)";
  return [NSError errorWithDomain:XSamErrorDomain code:e.status userInfo:@{NSLocalizedDescriptionKey : message}];
}

static NSString *Utf8(const std::string &s) { return [NSString stringWithUTF8String:s.c_str()] ?: @""; }

@implementation XSamPrompt {
 @public
  xsam_apple::BridgePrompt _prompt;
}
- (XSamGestureMode)kind {
  switch (_prompt.kind) {
    case xsam_apple::BridgePrompt::Kind::kPoint: return XSamGestureModePoint;
    case xsam_apple::BridgePrompt::Kind::kBox: return XSamGestureModeBox;
    case xsam_apple::BridgePrompt::Kind::kScribble: return XSamGestureModeScribble;
  }
  return XSamGestureModePoint;
}
- (NSArray<NSNumber *> *)coordinates {
  NSMutableArray<NSNumber *> *out = [NSMutableArray arrayWithCapacity:_prompt.xy.size()];
  for (double v : _prompt.xy) [out addObject:@(v)];
  return out;
}
@end

@implementation XSamSegment {
 @public
  NSString *_label;
  float _score;
  CGRect _boundingBox;
  uint32_t _colorRGB;
}
- (NSString *)label { return _label; }
- (float)score { return _score; }
- (CGRect)boundingBox { return _boundingBox; }
- (uint32_t)colorRGB { return _colorRGB; }
- (uint32_t)inkRGB { return xsam_apple::InkOn(_colorRGB); }
- (NSString *)caption { return Utf8(xsam_apple::Caption(_label.UTF8String, _score)); }
@end

@implementation XSamAnswer {
 @public
  xsam_apple::BridgeAnswer _answer;
  NSArray<XSamSegment *> *_segments;
}
- (NSInteger)width { return _answer.width; }
- (NSInteger)height { return _answer.height; }
- (NSArray<XSamSegment *> *)segments { return _segments; }
- (NSString *)text { return _answer.has_text ? Utf8(_answer.text) : nil; }
- (CGImageRef)newOverlayImage {
  std::vector<const uint8_t *> masks;
  for (const auto &s : _answer.segments) masks.push_back(s.mask.data());
  std::vector<uint8_t> rgba = xsam_apple::MaskLayerRgba(masks, _answer.height, _answer.width, 0.5f);
  if (rgba.empty()) return NULL;
  CFDataRef data = CFDataCreate(NULL, rgba.data(), static_cast<CFIndex>(rgba.size()));
  CGDataProviderRef provider = CGDataProviderCreateWithCFData(data);
  CGColorSpaceRef space = CGColorSpaceCreateWithName(kCGColorSpaceSRGB);
  CGImageRef image = CGImageCreate(_answer.width, _answer.height, 8, 32, _answer.width * 4, space,
                                   kCGBitmapByteOrderDefault | kCGImageAlphaPremultipliedLast, provider, NULL,
                                   false, kCGRenderingIntentDefault);
  CGColorSpaceRelease(space);
  CGDataProviderRelease(provider);
  CFRelease(data);
  return image;
}
@end

@implementation XSamSelfCheckReport {
 @public
  xsam_apple::BridgeSelfCheck _report;
}
- (NSInteger)requests { return static_cast<NSInteger>(_report.requests); }
- (double)worstLogitDiff { return _report.worst_logit_diff; }
- (double)worstMaskIou { return _report.worst_mask_iou; }
- (BOOL)passed { return _report.passed ? YES : NO; }
- (double)atol { return _report.atol; }
- (double)minIou { return _report.min_iou; }
@end

@implementation XSamBridge {
  std::unique_ptr<xsam_apple::BridgeSession> _session;
}

- (instancetype)initWithBundlePath:(NSString *)path error:(NSError **)error {
  if ((self = [super init])) {
    xsam_apple::BridgeError e;
    _session = xsam_apple::BridgeSession::Open(path.fileSystemRepresentation, true, &e);
    if (!_session) {
      if (error) *error = MakeError(e);
      return nil;
    }
  }
  return self;
}

- (BOOL)setImage:(CGImageRef)image error:(NSError **)error {
  const size_t w = CGImageGetWidth(image), h = CGImageGetHeight(image);
  std::vector<uint8_t> rgba(w * h * 4);
  CGColorSpaceRef space = CGColorSpaceCreateWithName(kCGColorSpaceSRGB);
  CGContextRef context = CGBitmapContextCreate(rgba.data(), w, h, 8, w * 4, space,
                                               kCGBitmapByteOrderDefault | kCGImageAlphaNoneSkipLast);
  CGColorSpaceRelease(space);
  if (!context) {
    if (error) *error = MakeError({XSAM_INVALID_ARGUMENT, "could not draw the image into RGB bytes"});
    return NO;
  }
  CGContextDrawImage(context, CGRectMake(0, 0, w, h), image);
  CGContextRelease(context);
  std::vector<uint8_t> rgb(w * h * 3);
  for (size_t i = 0; i < w * h; ++i) std::copy(&rgba[i * 4], &rgba[i * 4] + 3, &rgb[i * 3]);
  xsam_apple::BridgeError e;
  if (!_session->SetImage(rgb.data(), static_cast<int>(h), static_cast<int>(w), &e)) {
    if (error) *error = MakeError(e);
    return NO;
  }
  return YES;
}

- (XSamAnswer *)segmentTask:(NSString *)task
                       text:(NSString *)text
                    prompts:(NSArray<XSamPrompt *> *)prompts
                      error:(NSError **)error {
  xsam_apple::BridgeRequest request;
  request.task = task.UTF8String;
  request.has_text = text != nil;
  if (text) request.text = text.UTF8String;
  for (XSamPrompt *p in prompts) request.prompts.push_back(p->_prompt);
  XSamAnswer *answer = [[XSamAnswer alloc] init];
  xsam_apple::BridgeError e;
  if (!_session->Segment(request, &answer->_answer, &e)) {
    if (error) *error = MakeError(e);
    return nil;
  }
  NSMutableArray<XSamSegment *> *segments = [NSMutableArray array];
  for (size_t i = 0; i < answer->_answer.segments.size(); ++i) {
    const xsam_apple::BridgeSegment &s = answer->_answer.segments[i];
    XSamSegment *segment = [[XSamSegment alloc] init];
    segment->_label = Utf8(s.label);
    segment->_score = s.score;
    segment->_colorRGB = xsam_apple::PaletteRgb(i);
    std::array<int, 4> box{};
    segment->_boundingBox = xsam_apple::BoundingBox(s.mask.data(), answer->_answer.height, answer->_answer.width, &box)
                                ? CGRectMake(box[0], box[1], box[2] - box[0], box[3] - box[1])
                                : CGRectNull;
    [segments addObject:segment];
  }
  answer->_segments = segments;
  return answer;
}

- (XSamSelfCheckReport *)selfCheckWithAtol:(double)atol minIou:(double)minIou error:(NSError **)error {
  XSamSelfCheckReport *report = [[XSamSelfCheckReport alloc] init];
  xsam_apple::BridgeError e;
  if (!_session->SelfCheck(atol, minIou, &report->_report, &e)) {
    if (error) *error = MakeError(e);
    return nil;
  }
  return report;
}
@end

@implementation XSamGeometry

static xsam_apple::Fit FitFor(CGSize viewSize, CGSize imageSize) {
  return xsam_apple::FitCentered(static_cast<int>(imageSize.width), static_cast<int>(imageSize.height),
                                 viewSize.width, viewSize.height);
}

+ (CGRect)imageRectInViewSize:(CGSize)viewSize imageSize:(CGSize)imageSize {
  xsam_apple::Fit fit = FitFor(viewSize, imageSize);
  return CGRectMake(fit.offset_x, fit.offset_y, fit.image_width * fit.scale, fit.image_height * fit.scale);
}

+ (XSamPrompt *)promptForMode:(XSamGestureMode)mode
                         path:(NSArray<NSValue *> *)path
                     viewSize:(CGSize)viewSize
                    imageSize:(CGSize)imageSize {
  std::vector<std::array<double, 2>> points;
  for (NSValue *v : path) points.push_back({v.CGPointValue.x, v.CGPointValue.y});
  XSamPrompt *prompt = [[XSamPrompt alloc] init];
  xsam_apple::GestureMode m = mode == XSamGestureModeBox ? xsam_apple::GestureMode::kBox
                              : mode == XSamGestureModeScribble ? xsam_apple::GestureMode::kScribble
                                                                : xsam_apple::GestureMode::kPoint;
  return xsam_apple::PromptFromGesture(FitFor(viewSize, imageSize), m, points, &prompt->_prompt) ? prompt : nil;
}

+ (CGPoint)viewPointForImagePoint:(CGPoint)point viewSize:(CGSize)viewSize imageSize:(CGSize)imageSize {
  double vx = 0, vy = 0;
  xsam_apple::ImageToView(FitFor(viewSize, imageSize), point.x, point.y, &vx, &vy);
  return CGPointMake(vx, vy);
}

+ (CGPoint)labelCornerForBox:(CGRect)box labelSize:(CGSize)labelSize imageSize:(CGSize)imageSize {
  std::array<int, 2> corner = xsam_apple::LabelCorner(
      {static_cast<int>(CGRectGetMinX(box)), static_cast<int>(CGRectGetMinY(box)), static_cast<int>(CGRectGetMaxX(box)),
       static_cast<int>(CGRectGetMaxY(box))},
      static_cast<int>(std::ceil(labelSize.width)), static_cast<int>(std::ceil(labelSize.height)),
      static_cast<int>(imageSize.width), static_cast<int>(imageSize.height));
  return CGPointMake(corner[0], corner[1]);
}

@end
