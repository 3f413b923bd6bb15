#include "cli/json.hpp"

#include <gtest/gtest.h>

namespace parley::cli {
namespace {

// What other people choose (message texts, group names) reaches the terminal only as text that
// cannot drive it: control characters, C1 controls and bidirectional overrides become '?',
// broken UTF-8 becomes U+FFFD; everything else is kept.
TEST(printable, keeps_text_and_defuses_what_could_drive_a_terminal) {
  EXPECT_EQ(printable("héllo, wörld ✓"), "héllo, wörld ✓");
  EXPECT_EQ(printable("tab\tkept"), "tab\tkept");
  EXPECT_EQ(printable("esc\x1b[2Jbell\x07"), "esc?[2Jbell?");
  EXPECT_EQ(printable("c1 \xC2\x9B" "31m"), "c1 ?31m") << "CSI as a C1 control";
  EXPECT_EQ(printable("\xE2\x80\xAE" "txt.exe"), "?txt.exe") << "right-to-left override";
  EXPECT_EQ(printable("\xE2\x81\xA6" "x"), "?x") << "left-to-right isolate";
  EXPECT_EQ(printable("\xE2\x80\x99"), "\xE2\x80\x99") << "a quote mark is not an override";
  EXPECT_EQ(printable("bad \xFF byte"), "bad \xEF\xBF\xBD byte");
}

}  // namespace
}  // namespace parley::cli
