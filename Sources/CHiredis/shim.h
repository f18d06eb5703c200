#ifndef STICKYLAB_CHIREDIS_SHIM_H
#define STICKYLAB_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
