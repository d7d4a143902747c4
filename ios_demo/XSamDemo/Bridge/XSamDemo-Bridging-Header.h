// Exposes the Objective-C bridge to Swift (project.yml: SWIFT_OBJC_BRIDGING_HEADER).
#import "XSamBridge.h"
