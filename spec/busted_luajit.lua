-- Runs busted under LuaJIT (Debian's busted script uses the plain lua interpreter).
require("busted.runner")({ standalone = false })
