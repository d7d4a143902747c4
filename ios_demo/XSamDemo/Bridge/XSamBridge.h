// Objective-C face of the native core for the SwiftUI app. XSamBridge.mm only converts types: the work is in
// native/apple (BridgeSession over the C API, drawing maths, gestures), which is built and tested on Linux.
#import <CoreGraphics/CoreGraphics.h>
#import <Foundation/Foundation.h>

NS_ASSUME_NONNULL_BEGIN

/// NSError domain of the core's failures; the code is the xsam_status, the description the core's message.
extern NSErrorDomain const XSamErrorDomain;

typedef NS_ENUM(NSInteger, XSamGestureMode) {
  XSamGestureModePoint = 0,
  XSamGestureModeBox = 1,
  XSamGestureModeScribble = 2,
};

/// A visual prompt in image pixels (point: x, y; box: x0, y0, x1, y1; scribble: x0, y0, x1, y1, ...).
@interface XSamPrompt : NSObject
@property(nonatomic, readonly) XSamGestureMode kind;
@property(nonatomic, readonly, copy) NSArray<NSNumber *> *coordinates;
@end

@interface XSamSegment : NSObject
@property(nonatomic, readonly, copy) NSString *label;
@property(nonatomic, readonly) float score;
/// "label · 0.98", as the Python overlay writes it.
@property(nonatomic, readonly, copy) NSString *caption;
/// The mask's bounding box in image pixels; CGRectNull for an empty mask.
@property(nonatomic, readonly) CGRect boundingBox;
/// Palette colour (0xRRGGBB) and the text colour that reads on it.
@property(nonatomic, readonly) uint32_t colorRGB;
@property(nonatomic, readonly) uint32_t inkRGB;
@end

@interface XSamAnswer : NSObject
@property(nonatomic, readonly) NSInteger width;
@property(nonatomic, readonly) NSInteger height;
@property(nonatomic, readonly, copy) NSArray<XSamSegment *> *segments;
/// Generated text (GCG, chat), else nil.
@property(nonatomic, readonly, copy, nullable) NSString *text;
/// The masks as one image at the photo's size: palette colours at half alpha, later masks on top.
- (nullable CGImageRef)newOverlayImage CF_RETURNS_RETAINED;
@end

/// The bundle's golden vectors run on this device (xsam_selfcheck): the worst logit difference and mask IoU
/// against the stored outputs, and the verdict at the tolerances asked for.
@interface XSamSelfCheckReport : NSObject
@property(nonatomic, readonly) NSInteger requests;
@property(nonatomic, readonly) double worstLogitDiff;
@property(nonatomic, readonly) double worstMaskIou;
@property(nonatomic, readonly) BOOL passed;
@property(nonatomic, readonly) double atol;
@property(nonatomic, readonly) double minIou;
@end

/// One opened bundle. Not thread-safe: call it from one serial queue.
@interface XSamBridge : NSObject
- (nullable instancetype)initWithBundlePath:(NSString *)path error:(NSError **)error NS_SWIFT_NAME(init(bundlePath:));
- (instancetype)init NS_UNAVAILABLE;
/// Draws the image into RGB bytes and encodes it once for the requests that follow.
- (BOOL)setImage:(CGImageRef)image error:(NSError **)error NS_SWIFT_NAME(setImage(_:));
/// task: "referring", "interactive", ... (xsam_request_new's names); text may be nil.
- (nullable XSamAnswer *)segmentTask:(NSString *)task
                                text:(nullable NSString *)text
                             prompts:(NSArray<XSamPrompt *> *)prompts
                               error:(NSError **)error NS_SWIFT_NAME(segmentTask(_:text:prompts:));
/// Runs the golden vectors (the runner's tolerances: atol 1e-3, minIou 0.99). A failed comparison is a report
/// with passed == NO; a bundle without golden vectors is an error with code XSAM_UNSUPPORTED (5). The golden
/// images replace the encoded photo: the next segment call encodes it again.
- (nullable XSamSelfCheckReport *)selfCheckWithAtol:(double)atol
                                             minIou:(double)minIou
                                              error:(NSError **)error NS_SWIFT_NAME(selfCheck(atol:minIou:));
@end

/// The view <-> image maps of a fit-centred image (native/apple/overlay_math.hpp).
@interface XSamGeometry : NSObject
+ (CGRect)imageRectInViewSize:(CGSize)viewSize imageSize:(CGSize)imageSize
    NS_SWIFT_NAME(imageRect(inViewSize:imageSize:));
/// The prompt a finished gesture draws (view points, in order), or nil.
+ (nullable XSamPrompt *)promptForMode:(XSamGestureMode)mode
                                  path:(NSArray<NSValue *> *)path
                              viewSize:(CGSize)viewSize
                             imageSize:(CGSize)imageSize NS_SWIFT_NAME(prompt(for:path:viewSize:imageSize:));
+ (CGPoint)viewPointForImagePoint:(CGPoint)point viewSize:(CGSize)viewSize imageSize:(CGSize)imageSize
    NS_SWIFT_NAME(viewPoint(forImagePoint:viewSize:imageSize:));
/// Top-left corner, in image pixels, of a label box of labelSize (image pixels) for a mask's box.
+ (CGPoint)labelCornerForBox:(CGRect)box labelSize:(CGSize)labelSize imageSize:(CGSize)imageSize
    NS_SWIFT_NAME(labelCorner(forBox:labelSize:imageSize:));
@end

NS_ASSUME_NONNULL_END
