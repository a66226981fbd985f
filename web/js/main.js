// Entry point: every page module registers its routes and panels, then the shell starts.

import { start } from "/static/js/app.js";
import "/static/js/views/worklist.js";
import "/static/js/views/cases.js";
import "/static/js/views/case.js";
import "/static/js/views/priors_panel.js";
import "/static/js/views/portal.js";
import "/static/js/viewers/case_panels.js";
import "/static/js/views/consult.js";
import "/static/js/views/dashboard.js";
import "/static/js/views/admin.js";

start();
